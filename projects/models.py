from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Lower
from django.urls import reverse

from core.currencies import validate_currency_code


class Project(models.Model):
    class Kind(models.TextChoices):
        PRE_TRAINING = "pre_training", "Pre-training"
        FINE_TUNING = "fine_tuning", "Fine-tuning"
        PEFT = "peft", "PEFT (LoRA, adapters)"
        INFERENCE = "inference", "Inference"
        EVALUATION = "evaluation", "Evaluation"
        DATA = "data", "Data"
        OTHER = "other", "Other"

    class Status(models.TextChoices):
        PLANNED = "planned", "Planned"
        ACTIVE = "active", "Active"
        PAUSED = "paused", "Paused"
        COMPLETED = "completed", "Completed"
        CANCELLED = "cancelled", "Cancelled"

    team = models.ForeignKey(
        "accounts.Team", on_delete=models.PROTECT, related_name="projects"
    )
    name = models.CharField(max_length=120)
    slug = models.SlugField(max_length=120, unique=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="owned_projects",
    )
    kind = models.CharField(max_length=16, choices=Kind)
    status = models.CharField(max_length=16, choices=Status, default=Status.ACTIVE)
    description = models.TextField(blank=True)
    start_date = models.DateField()
    end_date = models.DateField()
    # An archived project keeps its pages, spend and reports, but leaves the dashboard
    # and is no longer evaluated for alerts.
    archived_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(end_date__gte=F("start_date")),
                name="project_ends_after_it_starts",
            ),
            models.UniqueConstraint(
                Lower("name"),
                "team",
                name="project_name_unique_in_team",
                violation_error_message="This team already has a project of that name.",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("project_detail", kwargs={"slug": self.slug})

    def clean(self) -> None:
        if self.start_date and self.end_date and self.end_date < self.start_date:
            raise ValidationError({"end_date": "The project must end after it starts."})

    @property
    def is_archived(self) -> bool:
        return self.archived_at is not None


class TrainingRun(models.Model):
    class ProgressUnit(models.TextChoices):
        TOKENS = "tokens", "tokens"
        STEPS = "steps", "steps"
        EPOCHS = "epochs", "epochs"

    class Status(models.TextChoices):
        PLANNED = "planned", "Planned"
        RUNNING = "running", "Running"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="runs")
    name = models.CharField(max_length=120)
    external_id = models.CharField(
        max_length=200,
        help_text="The value billing tags carry for this run, e.g. a job or run id.",
    )
    status = models.CharField(max_length=16, choices=Status, default=Status.PLANNED)
    gpu_type = models.CharField(max_length=60, help_text="e.g. H100 80GB")
    gpu_count = models.PositiveIntegerField()
    planned_gpu_hours = models.DecimalField(max_digits=14, decimal_places=2)
    rate_per_gpu_hour = models.DecimalField(max_digits=12, decimal_places=4)
    currency = models.CharField(
        max_length=3, default="USD", validators=[validate_currency_code]
    )
    start_date = models.DateField()
    end_date = models.DateField()
    progress_unit = models.CharField(
        max_length=10,
        choices=ProgressUnit,
        blank=True,
        help_text="What the run counts its progress in; empty if it reports none.",
    )
    units_planned = models.DecimalField(
        max_digits=24, decimal_places=2, null=True, blank=True
    )
    units_done = models.DecimalField(
        max_digits=24, decimal_places=2, null=True, blank=True
    )

    class Meta:
        ordering = ["start_date", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "external_id"],
                name="run_external_id_unique_in_project",
            ),
            models.CheckConstraint(
                condition=Q(end_date__gte=F("start_date")),
                name="run_ends_after_it_starts",
            ),
            models.CheckConstraint(
                condition=Q(planned_gpu_hours__gte=0) & Q(rate_per_gpu_hour__gte=0),
                name="run_plan_not_negative",
            ),
            models.CheckConstraint(
                condition=Q(units_done__gte=0) | Q(units_done__isnull=True),
                name="run_progress_not_negative",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def planned_cost(self) -> Decimal:
        return self.planned_gpu_hours * self.rate_per_gpu_hour

    def clean(self) -> None:
        errors = {}
        if self.start_date and self.end_date and self.end_date < self.start_date:
            errors["end_date"] = "The run must end after it starts."
        if self.units_planned is not None and self.units_planned <= 0:
            errors["units_planned"] = "Plan a positive amount of work, or leave empty."
        if self.units_done is not None and self.units_done < 0:
            errors["units_done"] = "Work done cannot be negative."
        if (
            self.units_planned or self.units_done is not None
        ) and not self.progress_unit:
            errors["progress_unit"] = (
                "Say what the progress counts: tokens, steps or epochs."
            )
        if errors:
            raise ValidationError(errors)


# A run's plan, as the plan editor and revisions handle it; its status and the work done
# are reported as the run goes, not planned.
RUN_PLAN_FIELDS = (
    "name",
    "external_id",
    "gpu_type",
    "gpu_count",
    "planned_gpu_hours",
    "rate_per_gpu_hour",
    "currency",
    "start_date",
    "end_date",
    "progress_unit",
    "units_planned",
)


class AllocationRule(models.Model):
    """Assigns cost records to a project (and optionally a run).

    Rules are evaluated in ascending `priority` over all projects; the first rule that
    matches a record wins, so no cost is ever counted for two projects.
    """

    class MatchOn(models.TextChoices):
        TAG = "tag", "Tag key = value"
        BILLING_ACCOUNT = "billing_account", "Billing account id"
        SUB_ACCOUNT = "sub_account", "Sub-account id"
        RESOURCE_PREFIX = "resource_prefix", "Resource id starts with"
        SERVICE = "service", "Service name"

    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="allocation_rules"
    )
    training_run = models.ForeignKey(
        TrainingRun,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="allocation_rules",
        help_text="Matching costs go to this run; leave empty to use the run tag.",
    )
    priority = models.PositiveIntegerField(
        default=100, help_text="Lower numbers are tried first."
    )
    match_on = models.CharField(max_length=20, choices=MatchOn)
    tag_key = models.CharField(max_length=200, blank=True)
    value = models.CharField(max_length=500)
    run_tag_key = models.CharField(
        max_length=200,
        blank=True,
        help_text=(
            "Optional tag whose value is a run's external id: matching costs go to "
            "that run of the project."
        ),
    )
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["priority", "id"]
        constraints = [
            models.CheckConstraint(
                condition=~Q(match_on="tag") | ~Q(tag_key=""),
                name="tag_rule_names_a_key",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.priority} {self.describe()} → {self.project}"

    def describe(self) -> str:
        if self.match_on == self.MatchOn.TAG:
            return f"tag {self.tag_key} = {self.value}"
        return f"{self.get_match_on_display().lower()} {self.value}"

    def clean(self) -> None:
        if self.match_on == self.MatchOn.TAG and not self.tag_key:
            raise ValidationError({"tag_key": "A tag rule needs the tag key."})
        if self.training_run_id and self.training_run.project_id != self.project_id:
            raise ValidationError(
                {"training_run": "The run must belong to the rule's project."}
            )


class ApiToken(models.Model):
    """A key for the API (`Authorization: Bearer <key>`), created in the portal at
    /account/tokens/ and shown once: only its SHA-256 is kept. A personal token acts
    as its user; a run reporter's is scoped to one project and may only post the
    events of that project's runs (projects/tokens.py)."""

    class Kind(models.TextChoices):
        PERSONAL = "personal", "Personal"
        RUN_REPORTER = "run-reporter", "Run reporter"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=20, choices=Kind, default=Kind.PERSONAL)
    project = models.ForeignKey(
        Project,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="reporter_tokens",
    )
    # The key's first characters, shown to tell tokens apart, and how one is found.
    prefix = models.CharField(max_length=12, unique=True)
    key_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.CheckConstraint(
                condition=Q(kind="run-reporter", project__isnull=False)
                | Q(kind="personal", project__isnull=True),
                name="api_token_project_iff_run_reporter",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"
