from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import F, Q, Sum
from django.urls import reverse
from django.utils import timezone

from core.crypto import CredentialsUnreadable, decrypt_json, encrypt_json, mask
from core.currencies import ZERO, validate_currency_code

# FOCUS costs carry up to 11 decimal places; quantities up to 15.
COST_DIGITS = {"max_digits": 30, "decimal_places": 11}
QUANTITY_DIGITS = {"max_digits": 32, "decimal_places": 15}


class CostMeasures(models.Model):
    """The four FOCUS cost measures, kept side by side on every cost row."""

    billed_cost = models.DecimalField(**COST_DIGITS)
    effective_cost = models.DecimalField(**COST_DIGITS)
    list_cost = models.DecimalField(**COST_DIGITS)
    contracted_cost = models.DecimalField(**COST_DIGITS)

    class Meta:
        abstract = True


COST_COLUMNS = ("billed_cost", "effective_cost", "list_cost", "contracted_cost")


class BillingSourceQuerySet(models.QuerySet):
    def delivering(self) -> "BillingSourceQuerySet":
        """The sources that deliver billing data, whose freshness and completeness
        count (stale-source alerts, month close): the enabled ones, but never the run
        telemetry's estimates, which billing data replaces."""
        return self.filter(is_enabled=True).exclude(kind=BillingSource.Kind.TELEMETRY)


class BillingSource(models.Model):
    class Kind(models.TextChoices):
        FOCUS = "focus", "FOCUS export"
        AWS_CUR = "aws-cur", "AWS Cost and Usage Report"
        AZURE = "azure", "Azure cost details"
        GCP = "gcp", "Google Cloud billing export"
        OPENAI = "openai", "OpenAI costs"
        ANTHROPIC = "anthropic", "Anthropic cost report"
        INVOICE_CSV = "invoice-csv", "GPU cloud invoice CSV"
        COMPUTE_INVOICE = "compute-invoice", "Approved compute invoices"
        # Estimates from training runs' own reports (budgets/telemetry.py).
        TELEMETRY = "telemetry", "Run telemetry estimates"

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=20, choices=Kind)
    is_enabled = models.BooleanField(default=True)
    config = models.JSONField(
        default=dict,
        blank=True,
        help_text="Where to read from, e.g. bucket and prefix, organisation id.",
    )
    credentials_token = models.TextField(
        blank=True, editable=False, help_text="Fernet-encrypted JSON; never shown."
    )
    sync_every_minutes = models.PositiveIntegerField(
        default=6 * 60, help_text="How often billing_sync fetches this source."
    )
    data_complete_through = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Data up to this moment is final; later spend is provisional.",
    )
    last_sync_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    connection_test = models.JSONField(
        default=dict,
        blank=True,
        editable=False,
        help_text="The latest connection test (billing.connection): when it was "
        "queued and checked, and what each step found.",
    )

    objects = BillingSourceQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("source_detail", kwargs={"pk": self.pk})

    @property
    def credentials(self) -> dict:
        return decrypt_json(self.credentials_token)

    @credentials.setter
    def credentials(self, value: dict) -> None:
        self.credentials_token = encrypt_json(value) if value else ""

    @property
    def masked_credentials(self) -> dict[str, str] | None:
        """The stored credentials, masked; None when no key can read them (the key
        changed or is missing), so that a page says so instead of failing."""
        try:
            credentials = self.credentials
        except CredentialsUnreadable:
            return None
        return {key: mask(str(value)) for key, value in credentials.items()}


class ImportRun(models.Model):
    class Status(models.TextChoices):
        # Waiting for the queue (Redis) to take it: the sweep hands it over.
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        IMPORTED = "imported", "Imported"
        UNCHANGED = "unchanged", "Unchanged"
        FAILED = "failed", "Failed"

    class Origin(models.TextChoices):
        COMMAND = "command", "Command line"
        UPLOAD = "upload", "Portal upload"
        SYNC = "sync", "Sync"

    # Empty while an import that creates its source runs, and for good when it
    # failed: the source is created in the import's transaction, so a failed import
    # leaves no source behind; `source_name` says which one it was for.
    source = models.ForeignKey(
        BillingSource,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="import_runs",
    )
    source_name = models.CharField(max_length=100)
    status = models.CharField(max_length=10, choices=Status, default=Status.RUNNING)
    file_name = models.CharField(
        max_length=500, blank=True, help_text="The delivery: a file, folder or zip."
    )
    files = models.JSONField(
        default=list,
        blank=True,
        help_text='Each file of the delivery: [{"name": ..., "sha256": ...}].',
    )
    upload = models.FileField(
        upload_to="imports/%Y/%m/",
        blank=True,
        help_text="The delivery as uploaded in the portal (several files: a zip of "
        "them), kept for audit.",
    )
    upload_name = models.CharField(
        max_length=255,
        blank=True,
        help_text="The uploaded file's own name, as its owner knows it (storage may "
        "rename it); empty for several files, kept as a zip of them.",
    )
    file_format = models.CharField(max_length=20, default="auto")
    period = models.DateField(
        null=True,
        blank=True,
        help_text="The billing month of a delivery without rows (its first day).",
    )
    currency = models.CharField(
        max_length=3,
        blank=True,
        validators=[validate_currency_code],
        help_text="The currency of a file that names none.",
    )
    allow_overlap = models.BooleanField(
        default=False,
        help_text="Import even if another source holds the same files or billing "
        "accounts and periods.",
    )
    checksum = models.CharField(max_length=64, blank=True)
    billing_periods = models.JSONField(default=list)
    rows_read = models.PositiveIntegerField(default=0)
    rows_loaded = models.PositiveIntegerField(default=0)
    totals = models.JSONField(default=dict)
    replaced = models.JSONField(
        default=dict,
        blank=True,
        help_text='What the import removed: {"rows": N, "billed": {...}, '
        '"effective": {...}}.',
    )
    warnings = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True)
    origin = models.CharField(max_length=10, choices=Origin, default=Origin.COMMAND)
    attempts = models.PositiveSmallIntegerField(
        default=0, help_text="How many times a worker started this import."
    )
    # When the current attempt was handed to the queue or started: the sweep finds a
    # run still running a task time limit after it (import_runs_sweep).
    attempted_at = models.DateTimeField(default=timezone.now)
    announce_due = models.BooleanField(
        default=False,
        help_text="The import is in, but the work it sets off (alert evaluation) "
        "could not be queued: the sweep queues it again.",
    )
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]
        indexes = [
            # import_runs_sweep: the few runs queued or running, by age.
            models.Index(
                fields=["attempted_at"],
                name="importrun_unfinished_idx",
                condition=Q(status__in=["queued", "running"]),
            )
        ]

    def __str__(self) -> str:
        return f"{self.source_name} {self.started_at:%Y-%m-%d %H:%M} {self.status}"

    def save(self, *args, **kwargs) -> None:
        if not self.source_name and self.source_id:
            self.source_name = self.source.name
        super().save(*args, **kwargs)

    def get_absolute_url(self) -> str:
        return reverse("import_detail", kwargs={"pk": self.pk})

    @property
    def totals_by_currency(self) -> list[dict]:
        """Billed, effective, allocated and unallocated (effective) per currency."""
        totals = self.totals or {}
        rows = []
        for currency, billed in totals.get("billed", {}).items():
            effective = Decimal(totals.get("effective", {}).get(currency, "0"))
            unallocated = Decimal(totals.get("unallocated", {}).get(currency, "0"))
            rows.append(
                {
                    "currency": currency,
                    "billed": Decimal(billed),
                    "effective": effective,
                    "allocated": effective - unallocated,
                    "unallocated": unallocated,
                }
            )
        return rows

    @property
    def replaced_by_currency(self) -> list[dict]:
        """Billed and effective cost the import removed, per currency."""
        replaced = self.replaced or {}
        effective = replaced.get("effective", {})
        return [
            {
                "currency": currency,
                "billed": Decimal(billed),
                "effective": Decimal(effective.get(currency, "0")),
            }
            for currency, billed in replaced.get("billed", {}).items()
        ]

    @property
    def duration(self):
        return self.finished_at - self.started_at if self.finished_at else None


class CostRecord(CostMeasures):
    """One billed cost line with FOCUS column semantics; the only fact table.

    Its foreign keys have no database constraint (db_constraint=False): checking each
    of a million loaded rows at commit took 11 s, for a handful of distinct keys. The
    loader checks and locks each distinct key once instead (billing.loader), and
    Django carries out on_delete as it always does. What the database no longer
    stops: rows pointing nowhere after a delete made outside Django, in raw SQL.

    Every index is paid for by every row of every import. The import run, project
    and training run keys are not indexed (the three indexes took a fifth of the
    load's database time): reads go through the daily rollup, and only the rare
    delete of a project, run or import run scans the table to clear its key.
    """

    source = models.ForeignKey(
        BillingSource,
        on_delete=models.CASCADE,
        related_name="cost_records",
        db_constraint=False,
        db_index=False,  # cost_source_period starts with it
    )
    import_run = models.ForeignKey(
        ImportRun,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        db_constraint=False,
        db_index=False,
    )
    billing_account_id = models.CharField(max_length=200)
    billing_account_name = models.CharField(max_length=200, blank=True)
    sub_account_id = models.CharField(max_length=200, blank=True)
    sub_account_name = models.CharField(max_length=200, blank=True)
    billing_period_start = models.DateTimeField()
    billing_period_end = models.DateTimeField()
    charge_period_start = models.DateTimeField()
    charge_period_end = models.DateTimeField()
    charge_category = models.CharField(max_length=20)
    charge_class = models.CharField(max_length=20, blank=True)
    charge_description = models.TextField(blank=True)
    charge_frequency = models.CharField(max_length=20, blank=True)
    billing_currency = models.CharField(
        max_length=3, validators=[validate_currency_code]
    )
    invoice_id = models.CharField(max_length=200, blank=True)
    provider_name = models.CharField(max_length=200)
    publisher_name = models.CharField(max_length=200, blank=True)
    invoice_issuer_name = models.CharField(max_length=200, blank=True)
    service_name = models.CharField(max_length=200, blank=True)
    service_category = models.CharField(max_length=100, blank=True)
    region_id = models.CharField(max_length=100, blank=True)
    resource_id = models.CharField(max_length=1000, blank=True)
    resource_name = models.CharField(max_length=1000, blank=True)
    resource_type = models.CharField(max_length=200, blank=True)
    sku_id = models.CharField(max_length=200, blank=True)
    consumed_quantity = models.DecimalField(null=True, blank=True, **QUANTITY_DIGITS)
    consumed_unit = models.CharField(max_length=100, blank=True)
    tags = models.JSONField(default=dict, blank=True)
    is_provisional = models.BooleanField(default=False)
    project = models.ForeignKey(
        "projects.Project",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="cost_records",
        db_constraint=False,
        db_index=False,
    )
    training_run = models.ForeignKey(
        "projects.TrainingRun",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="cost_records",
        db_constraint=False,
        db_index=False,
    )

    class Meta:
        indexes = [
            # Replacing a source's billing period on re-import.
            models.Index(
                fields=["source", "billing_period_start"], name="cost_source_period"
            ),
            # Rebuilding the DailyCost rollup for a range of charge dates.
            models.Index(fields=["charge_period_start"], name="cost_charge_start"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(charge_period_end__gte=F("charge_period_start")),
                name="charge_period_is_half_open",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.provider_name} {self.service_name} {self.billed_cost}"


# Units that providers use for GPU time; consumed quantity in them counts as GPU-hours.
GPU_HOUR_UNITS = ("gpu-hours", "gpu hours", "gpu-hour", "gpu hour", "gpuhours")


class DailyCost(CostMeasures):
    """The rollup the portal reads: one row per day, allocation and billing currency.

    Amounts are in the reporting currency, converted with `fx_rate`, the rate in force
    on that day when the rollup was built; kept so that past reports do not shift. A row
    whose currency has no rate keeps `fx_rate` empty and its amounts in the billing
    currency: shown as unconverted, never dropped. A day's rows of one project and
    currency add up to that day's amount converted and rounded once, to the stored
    places (the last row takes the rounding remainder), so that the report reconciles
    exactly with the cost records converted day by day.
    """

    date = models.DateField()
    project = models.ForeignKey(
        "projects.Project",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="daily_costs",
    )
    training_run = models.ForeignKey(
        "projects.TrainingRun",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="daily_costs",
    )
    source = models.ForeignKey(
        BillingSource, on_delete=models.CASCADE, related_name="daily_costs"
    )
    provider_name = models.CharField(max_length=200)
    service_name = models.CharField(max_length=200, blank=True)
    service_category = models.CharField(max_length=100, blank=True)
    charge_category = models.CharField(max_length=20)
    billing_currency = models.CharField(max_length=3)
    fx_rate = models.DecimalField(max_digits=20, decimal_places=10, null=True)
    is_provisional = models.BooleanField(default=False)
    gpu_hours = models.DecimalField(default=Decimal("0"), **QUANTITY_DIGITS)
    # Each cost record counts once, on the day its charge starts, also when its
    # amount is spread over several days: the cost explorer's "cost lines".
    cost_lines = models.PositiveIntegerField(default=0)
    # Billed and effective cost before conversion, in `billing_currency`: the monthly
    # report reconciles them, currency by currency, with the cost records.
    billed_in_billing_currency = models.DecimalField(
        default=Decimal("0"), **COST_DIGITS
    )
    effective_in_billing_currency = models.DecimalField(
        default=Decimal("0"), **COST_DIGITS
    )

    class Meta:
        ordering = ["date"]
        indexes = [
            # Plan vs actual of one project over a date range (every portal page).
            models.Index(fields=["project", "date"], name="daily_project_date"),
            # Rebuilding and organisation-wide totals by date range.
            models.Index(fields=["date"], name="daily_date"),
        ]

    def __str__(self) -> str:
        return f"{self.date} {self.project or 'unallocated'} {self.effective_cost}"


class MonthlyCost(CostMeasures):
    """DailyCost added up by month, written with it by each rebuild
    (`billing.services.daily_costs_rebuild`): what pages that add up whole months
    read (spend to date, year to date, trends), a thirtieth of the rows.

    `converted` says whether the days had an FX rate: converted amounts are in the
    reporting currency, others in their billing currencies (never to be added up).
    """

    month = models.DateField(help_text="The first day of the month.")
    project = models.ForeignKey(
        "projects.Project",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="monthly_costs",
    )
    training_run = models.ForeignKey(
        "projects.TrainingRun",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="monthly_costs",
    )
    converted = models.BooleanField()
    is_provisional = models.BooleanField(default=False)
    gpu_hours = models.DecimalField(default=Decimal("0"), **QUANTITY_DIGITS)
    cost_lines = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["month"]
        indexes = [models.Index(fields=["month"], name="monthly_month")]

    def __str__(self) -> str:
        who = self.project or "unallocated"
        return f"{self.month:%Y-%m} {who} {self.effective_cost}"


class FxRate(models.Model):
    """Units of the reporting currency for one unit of `currency`, from `date` on."""

    currency = models.CharField(max_length=3, validators=[validate_currency_code])
    date = models.DateField()
    rate = models.DecimalField(max_digits=20, decimal_places=10)

    class Meta:
        ordering = ["currency", "-date"]
        constraints = [
            models.UniqueConstraint(
                fields=["currency", "date"], name="one_rate_per_day"
            ),
            models.CheckConstraint(condition=Q(rate__gt=0), name="rate_is_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.currency} {self.date}: {self.rate}"


class ProviderInvoice(models.Model):
    """A provider's invoice total as finance enters it from the invoice itself: the
    monthly report sets it against the billed cost of the cost records that carry its
    invoice id, and flags any difference."""

    provider = models.CharField(
        max_length=200,
        help_text="As the cost records name it (ProviderName), e.g. AWS.",
    )
    invoice_id = models.CharField(max_length=200)
    source = models.ForeignKey(
        BillingSource,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="provider_invoices",
        help_text="Count only this source's cost records; empty: any source's.",
    )
    month = models.DateField(help_text="The first day of the billing month invoiced.")
    amount = models.DecimalField(**COST_DIGITS)
    currency = models.CharField(max_length=3, validators=[validate_currency_code])
    notes = models.TextField(blank=True)

    class Meta:
        ordering = ["-month", "provider", "invoice_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "invoice_id"], name="one_invoice_per_provider_id"
            ),
            models.CheckConstraint(
                condition=Q(month__day=1), name="provider_invoice_month_first_day"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.provider} {self.invoice_id}"

    def clean(self) -> None:
        if self.month and self.month.day != 1:
            raise ValidationError({"month": "Use the first day of the month."})


class Accrual(models.Model):
    """What finance accrued for a month's spend still provisional (not yet invoiced),
    for one provider and team (none: unallocated), in the reporting currency. Kept as
    booked, so that the true-up against the final figures shows once the invoices
    arrive. `final_at_booking` is the spend of the same provider and team that was
    already final then: the true-up is final spend now less it and the accrual."""

    month = models.DateField(help_text="The first day of the month accrued.")
    provider = models.CharField(max_length=200)
    team = models.ForeignKey(
        "accounts.Team",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="accruals",
    )
    currency = models.CharField(max_length=3, validators=[validate_currency_code])
    amount = models.DecimalField(**COST_DIGITS)
    final_at_booking = models.DecimalField(**COST_DIGITS)
    booked_at = models.DateTimeField()
    booked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )

    class Meta:
        ordering = ["month", "provider", "team__name"]
        constraints = [
            models.UniqueConstraint(
                fields=["month", "provider", "team"],
                condition=Q(team__isnull=False),
                name="one_accrual_per_month_provider_team",
            ),
            models.UniqueConstraint(
                fields=["month", "provider"],
                condition=Q(team__isnull=True),
                name="one_unallocated_accrual_per_month_provider",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.month:%Y-%m} {self.provider} {self.team or 'unallocated'}"


class ComputeInvoice(models.Model):
    """An invoice from a GPU cloud or other vendor without a billing export."""

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"

    vendor = models.CharField(max_length=120)
    invoice_number = models.CharField(max_length=120)
    issued_on = models.DateField()
    period_start = models.DateField()
    period_end = models.DateField()
    currency = models.CharField(max_length=3, validators=[validate_currency_code])
    status = models.CharField(max_length=10, choices=Status, default=Status.DRAFT)
    project = models.ForeignKey(
        "projects.Project",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="compute_invoices",
    )
    training_run = models.ForeignKey(
        "projects.TrainingRun",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="compute_invoices",
    )
    notes = models.TextField(blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="Who last approved, rejected or set it back to draft.",
    )
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-issued_on", "vendor"]
        constraints = [
            models.UniqueConstraint(
                fields=["vendor", "invoice_number"],
                name="invoice_number_unique_per_vendor",
            ),
            models.CheckConstraint(
                condition=Q(period_end__gte=F("period_start")),
                name="invoice_period_ends_after_start",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.vendor} {self.invoice_number}"

    def get_absolute_url(self) -> str:
        return reverse("invoice_detail", kwargs={"pk": self.pk})

    def clean(self) -> None:
        if self.training_run_id and self.training_run.project_id != self.project_id:
            raise ValidationError(
                {"training_run": "The run must belong to the invoice's project."}
            )

    @property
    def total(self) -> Decimal:
        return self.lines.aggregate(total=Sum("amount"))["total"] or ZERO


class ComputeInvoiceLine(models.Model):
    invoice = models.ForeignKey(
        ComputeInvoice, on_delete=models.CASCADE, related_name="lines"
    )
    description = models.CharField(max_length=300)
    gpu_type = models.CharField(max_length=60, blank=True)
    gpu_hours = models.DecimalField(
        max_digits=14, decimal_places=4, null=True, blank=True
    )
    rate = models.DecimalField(max_digits=14, decimal_places=6, null=True, blank=True)
    amount = models.DecimalField(max_digits=16, decimal_places=4)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.description
