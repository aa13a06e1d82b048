from datetime import date
from decimal import Decimal
from functools import cached_property

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F, Q, Sum
from django.urls import reverse
from django.utils import timezone

from core.crypto import CredentialsUnreadable, decrypt_json
from core.currencies import ZERO, validate_currency_code
from core.models import OwedMessage


class CostMeasure(models.TextChoices):
    """The four FOCUS cost measures; a budget tracks one of them."""

    EFFECTIVE = "effective_cost", "Effective cost (amortised)"
    BILLED = "billed_cost", "Billed cost (cash)"
    LIST = "list_cost", "List cost"
    CONTRACTED = "contracted_cost", "Contracted cost"


class Budget(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        APPROVED = "approved", "Approved by finance"

    project = models.OneToOneField(
        "projects.Project", on_delete=models.CASCADE, related_name="budget"
    )
    total = models.DecimalField(max_digits=16, decimal_places=2)
    currency = models.CharField(max_length=3, validators=[validate_currency_code])
    cost_measure = models.CharField(
        max_length=20, choices=CostMeasure, default=CostMeasure.EFFECTIVE
    )
    start_date = models.DateField()
    end_date = models.DateField()
    tolerance_percent = models.DecimalField(
        max_digits=5,
        decimal_places=2,
        default=Decimal("10"),
        validators=[MinValueValidator(0), MaxValueValidator(100)],
        help_text="How far actual may run above plan before the project is at risk.",
    )
    lines_must_sum_to_total = models.BooleanField(
        default=True, help_text="Monthly plan lines must add up to the total."
    )
    status = models.CharField(max_length=10, choices=Status, default=Status.DRAFT)
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    approved_at = models.DateTimeField(null=True, blank=True)
    version = models.PositiveIntegerField(
        default=1,
        help_text="Counts the changes to the plan: an approval names the version "
        "finance reviewed, and a draft changed since is not approved by it.",
    )
    authors = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        blank=True,
        related_name="+",
        help_text="Who created or changed the draft: none of them may approve it.",
    )

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(total__gte=0), name="budget_not_negative"
            ),
            models.CheckConstraint(
                condition=Q(end_date__gte=F("start_date")),
                name="budget_ends_after_it_starts",
            ),
            models.CheckConstraint(
                condition=Q(tolerance_percent__gte=0) & Q(tolerance_percent__lte=100),
                name="budget_tolerance_is_a_percent",
            ),
        ]

    def __str__(self) -> str:
        return f"Budget of {self.project}"

    def clean(self) -> None:
        errors = {}
        if self.total is not None and self.total < 0:
            errors["total"] = "A budget cannot be negative."
        if self.start_date and self.end_date and self.end_date < self.start_date:
            errors["end_date"] = "The budget must end after it starts."
        if errors:
            raise ValidationError(errors)

    @property
    def planned_total(self) -> Decimal:
        return self.lines.aggregate(total=Sum("amount"))["total"] or ZERO


# What a lead plans and finance approves of a budget: the fields a revision records.
PLAN_FIELDS = (
    "total",
    "currency",
    "cost_measure",
    "start_date",
    "end_date",
    "tolerance_percent",
    "lines_must_sum_to_total",
)


class BudgetLine(models.Model):
    """The plan for one calendar month, optionally for one category of spend."""

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="lines")
    month = models.DateField(help_text="The first day of the month.")
    category = models.CharField(
        max_length=60,
        blank=True,
        help_text="e.g. compute, storage, API; empty for all.",
    )
    amount = models.DecimalField(max_digits=16, decimal_places=2)

    class Meta:
        ordering = ["month", "category"]
        constraints = [
            models.UniqueConstraint(
                fields=["budget", "month", "category"],
                name="one_line_per_month_category",
            ),
            models.CheckConstraint(
                condition=Q(amount__gte=0), name="budget_line_not_negative"
            ),
        ]

    def __str__(self) -> str:
        label = self.month.strftime("%b %Y")
        return f"{label} {self.category}".strip()

    def clean(self) -> None:
        errors = {}
        if self.amount is not None and self.amount < 0:
            errors["amount"] = "A planned amount cannot be negative."
        if self.month and self.month.day != 1:
            errors["month"] = "Use the first day of the month."
        try:
            budget = self.budget  # set on unsaved lines by the formset too
        except Budget.DoesNotExist:
            budget = None
        if budget and self.month and budget.start_date and budget.end_date:
            first_month = budget.start_date.replace(day=1)
            if not first_month <= self.month <= budget.end_date:
                errors["month"] = (
                    f"{self.month:%B %Y} is outside the budget "
                    f"({budget.start_date:%b %Y} to {budget.end_date:%b %Y})."
                )
        if errors:
            raise ValidationError(errors)


class BudgetRevision(models.Model):
    """A change to an approved budget, waiting for finance: the plan as proposed.

    `proposal` holds the budget's fields and monthly lines as JSON-safe strings; the
    budget itself keeps its approved plan until finance approves the revision.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting for finance"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"
        WITHDRAWN = "withdrawn", "Replaced by a later revision"

    budget = models.ForeignKey(
        Budget, on_delete=models.CASCADE, related_name="revisions"
    )
    status = models.CharField(max_length=10, choices=Status, default=Status.PENDING)
    proposal = models.JSONField()
    previous = models.JSONField(help_text="The approved plan the proposal changes.")
    proposed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    proposed_at = models.DateTimeField(auto_now_add=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    reason = models.TextField(
        blank=True, help_text="Why the lead proposes the change, for finance."
    )
    comment = models.TextField(blank=True)

    class Meta:
        ordering = ["-proposed_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["budget"],
                condition=Q(status="pending"),
                name="one_pending_revision_per_budget",
            ),
        ]

    def __str__(self) -> str:
        return f"Revision of {self.budget.project} ({self.get_status_display()})"


class AlertKind(models.TextChoices):
    BUDGET_USED = "budget_used", "Share of the month's plan used"
    FORECAST_OVER = "forecast_over", "Forecast at completion over budget"
    VARIANCE = "variance", "Month-to-date variance beyond tolerance"
    RUN_OVER = "run_over", "Run over its planned cost or GPU-hours"
    SPEND_ANOMALY = "spend_anomaly", "Daily spend far above its usual level"
    STALE_SOURCE = "stale_source", "Billing data is stale"


class AlertRule(models.Model):
    """Overrides one kind of alert: for the organisation (no project) or one project.

    Without a row, each kind runs with the defaults in
    `budgets.alerts.rules.DEFAULT_THRESHOLDS`.
    """

    kind = models.CharField(max_length=20, choices=AlertKind)
    project = models.ForeignKey(
        "projects.Project",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="alert_rules",
        help_text="Empty: the organisation's default for every project.",
    )
    is_enabled = models.BooleanField(default=True)
    thresholds = models.JSONField(
        default=list,
        blank=True,
        help_text=(
            "Levels at which the alert fires, e.g. [50, 80, 100] percent of the "
            "month's plan; [48] hours for stale data; [3] times the usual daily "
            "spend. Empty: the default."
        ),
    )

    class Meta:
        ordering = ["kind", "project"]
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "project"], name="one_rule_per_kind_and_project"
            ),
            models.UniqueConstraint(
                fields=["kind"],
                condition=Q(project__isnull=True),
                name="one_default_rule_per_kind",
            ),
        ]

    def __str__(self) -> str:
        scope = self.project or "every project"
        return f"{self.get_kind_display()} ({scope})"

    def clean(self) -> None:
        values = self.thresholds
        if not isinstance(values, list) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and 0 < v <= 10_000
            for v in values
        ):
            raise ValidationError(
                {"thresholds": "Give a list of positive numbers, e.g. [50, 80, 100]."}
            )


class Alert(models.Model):
    """One firing of one rule, for one scope, period and threshold.

    The database refuses a second row for the same (kind, scope, period, threshold), and
    a second open alert for the same (kind, scope, period): that, not care in the
    evaluator, is what keeps two workers from firing twice.
    """

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        ACKNOWLEDGED = "acknowledged", "Acknowledged"
        RESOLVED = "resolved", "Resolved"

    class Severity(models.TextChoices):
        WARNING = "warning", "Warning"
        CRITICAL = "critical", "Critical"

    kind = models.CharField(max_length=20, choices=AlertKind)
    scope_key = models.CharField(
        max_length=40, help_text="What the alert is about, e.g. project:12 or run:7."
    )
    period = models.DateField(
        help_text="The month, day or run the alert is about (its first day)."
    )
    threshold = models.DecimalField(max_digits=12, decimal_places=2)
    project = models.ForeignKey(
        "projects.Project",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="alerts",
    )
    training_run = models.ForeignKey(
        "projects.TrainingRun",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="alerts",
    )
    source = models.ForeignKey(
        "billing.BillingSource",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="alerts",
    )
    severity = models.CharField(max_length=10, choices=Severity)
    status = models.CharField(max_length=12, choices=Status, default=Status.OPEN)
    subject = models.CharField(max_length=300)
    reason = models.TextField()
    value = models.DecimalField(
        max_digits=20, decimal_places=2, help_text="The level last observed."
    )
    figures = models.JSONField(
        default=dict,
        blank=True,
        help_text=(
            "What the alert fired with, as its emails show it however late they go: "
            "the date, subject, reason and figures (exact decimal strings). Empty on "
            "alerts that fired before figures were kept."
        ),
    )
    waiting_for = models.CharField(
        max_length=300,
        blank=True,
        help_text="Why the rule cannot re-evaluate now, e.g. stale billing data.",
    )
    escalated_from = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    fired_at = models.DateTimeField()
    updated_at = models.DateTimeField(auto_now=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolution = models.CharField(max_length=300, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    acknowledged_at = models.DateTimeField(
        null=True, blank=True, help_text="The first acknowledgement: who took it on."
    )

    class Meta:
        ordering = ["-fired_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "scope_key", "period", "threshold"],
                name="alert_once_per_rule_scope_period_threshold",
            ),
            models.UniqueConstraint(
                fields=["kind", "scope_key", "period"],
                condition=Q(status__in=["open", "acknowledged"]),
                name="one_active_alert_per_rule_scope_period",
            ),
        ]
        indexes = [
            # The evaluator's read of every active alert, and the alerts page.
            models.Index(fields=["status", "kind"], name="alert_status_kind"),
        ]

    def __str__(self) -> str:
        return self.subject

    def get_absolute_url(self) -> str:
        return reverse("alert_detail", kwargs={"pk": self.pk})

    @property
    def is_active(self) -> bool:
        return self.status != self.Status.RESOLVED

    # Subject and reason follow the level while the alert is active; its emails say
    # what fired it. An alert without kept figures falls back to its latest words.
    @property
    def fired_as_of(self) -> date | None:
        as_of = self.figures.get("as_of")
        return date.fromisoformat(as_of) if as_of else None

    @property
    def fired_subject(self) -> str:
        return self.figures.get("subject") or self.subject

    @property
    def fired_reason(self) -> str:
        return self.figures.get("reason") or self.reason

    @property
    def latest_acknowledgement(self) -> "Acknowledgement | None":
        """The newest note; reads prefetched acknowledgements when there are."""
        acknowledgements = list(self.acknowledgements.all())
        return acknowledgements[-1] if acknowledgements else None


class Acknowledgement(models.Model):
    """Someone is on an alert, with a note: each one kept, none overwritten."""

    alert = models.ForeignKey(
        Alert, on_delete=models.CASCADE, related_name="acknowledgements"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    at = models.DateTimeField(default=timezone.now)
    note = models.TextField(blank=True)

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.alert} acknowledged by {self.user} on {self.at:%Y-%m-%d %H:%M}"


class Notification(OwedMessage):
    """An email owed to one person about one alert: recorded before it is sent, claimed
    by a conditional UPDATE when it is sent, so it goes out once."""

    class Channel(models.TextChoices):
        IMMEDIATE = "immediate", "Immediately"
        DIGEST = "digest", "In the daily digest"

    alert = models.ForeignKey(
        Alert, on_delete=models.CASCADE, related_name="notifications"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    channel = models.CharField(max_length=10, choices=Channel)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["alert", "user"], name="one_notification_per_alert_and_user"
            ),
        ]
        indexes = [
            # The sender's sweep for what is still owed.
            models.Index(fields=["status", "channel"], name="notification_owed"),
        ]

    def __str__(self) -> str:
        return f"{self.alert} → {self.user} ({self.status})"


class GpuRate(models.Model):
    """An entry of the organisation's rate card: what a GPU-hour of a kind costs,
    kept by finance in Django admin. A run's events may name an entry instead of
    giving a price."""

    name = models.CharField(
        max_length=100, unique=True, help_text="e.g. “H100 SXM on-demand, us-east”."
    )
    gpu_type = models.CharField(max_length=60, blank=True)
    price_per_gpu_hour = models.DecimalField(
        max_digits=12, decimal_places=4, validators=[MinValueValidator(0)]
    )
    currency = models.CharField(
        max_length=3, default="USD", validators=[validate_currency_code]
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name}: {self.price_per_gpu_hour} {self.currency}/GPU-hour"


class RunEvent(models.Model):
    """What a training run reports of itself as it goes (POST
    /api/v1/runs/{id}/events/): it started, it is still going on so many GPUs at such
    a price, it stopped. From them its cost is estimated (budgets/telemetry.py) until
    billing data comes in."""

    class Kind(models.TextChoices):
        START = "start", "Start"
        HEARTBEAT = "heartbeat", "Heartbeat"
        STOP = "stop", "Stop"

    run = models.ForeignKey(
        "projects.TrainingRun", on_delete=models.CASCADE, related_name="events"
    )
    kind = models.CharField(max_length=10, choices=Kind)
    idempotency_key = models.CharField(max_length=200)
    at = models.DateTimeField(help_text="When the run says it happened.")
    gpu_count = models.PositiveIntegerField(null=True, blank=True)
    gpu_type = models.CharField(max_length=60, blank=True)
    price_per_gpu_hour = models.DecimalField(
        max_digits=12, decimal_places=4, null=True, blank=True
    )
    units_done = models.DecimalField(
        max_digits=24, decimal_places=2, null=True, blank=True
    )
    received_at = models.DateTimeField(auto_now_add=True)
    reported_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["at", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["run", "idempotency_key"], name="run_event_key_unique"
            ),
            models.UniqueConstraint(
                fields=["run"],
                condition=Q(kind="stop"),
                name="run_event_one_stop",
            ),
            models.CheckConstraint(
                condition=Q(price_per_gpu_hour__gte=0)
                | Q(price_per_gpu_hour__isnull=True),
                name="run_event_price_not_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.run} {self.kind} at {self.at:%Y-%m-%d %H:%M}"


class Webhook(models.Model):
    """Where a team or a project hears of its alerts besides email: a Slack-compatible
    incoming webhook, or a JSON webhook signed with HMAC-SHA256. The URL (a Slack URL
    is itself a key) and the signing secret are kept encrypted (FIELD_ENCRYPTION_KEY);
    only the URL's host is kept in clear, to show it."""

    class Kind(models.TextChoices):
        SLACK = "slack", "Slack-compatible incoming webhook"
        JSON = "json", "JSON, signed with HMAC-SHA256"

    team = models.ForeignKey(
        "accounts.Team",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="webhooks",
    )
    project = models.ForeignKey(
        "projects.Project",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="webhooks",
    )
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=10, choices=Kind)
    host = models.CharField(max_length=255)
    secrets_token = models.TextField(help_text="Fernet-encrypted JSON: url, secret.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "pk"]
        constraints = [
            models.CheckConstraint(
                condition=Q(team__isnull=True, project__isnull=False)
                | Q(team__isnull=False, project__isnull=True),
                name="webhook_of_a_team_or_a_project",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.host})"

    @cached_property
    def secrets(self) -> dict:
        """The URL and secret, decrypted once per instance; empty when
        FIELD_ENCRYPTION_KEY no longer reads them."""
        try:
            return decrypt_json(self.secrets_token)
        except CredentialsUnreadable:
            return {}


class WebhookDelivery(OwedMessage):
    """One message owed to one webhook: an alert, or a test (no alert). Recorded in
    the transaction that fires the alert, then claimed, sent and settled as alert
    emails are (core.delivery), so each goes out once."""

    webhook = models.ForeignKey(
        Webhook, on_delete=models.CASCADE, related_name="deliveries"
    )
    alert = models.ForeignKey(
        Alert, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["webhook", "alert"],
                condition=Q(alert__isnull=False),
                name="one_delivery_per_webhook_and_alert",
            ),
        ]
        indexes = [models.Index(fields=["status"], name="webhook_delivery_owed")]

    def __str__(self) -> str:
        return f"{self.webhook} ← {self.alert or 'test'} ({self.status})"
