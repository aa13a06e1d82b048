from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F, Q, Sum

from spendtracker.currencies import validate_currency_code


def default_alert_thresholds() -> list[int]:
    return [50, 80, 100]


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
    alert_thresholds = models.JSONField(
        default=default_alert_thresholds,
        help_text="Percent of budget used at which alerts fire.",
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
        thresholds = self.alert_thresholds
        if not isinstance(thresholds, list) or not all(
            isinstance(t, int) and 0 < t <= 1000 for t in thresholds
        ):
            errors["alert_thresholds"] = "Give whole percents between 1 and 1000."
        if errors:
            raise ValidationError(errors)

    @property
    def planned_total(self) -> Decimal:
        return self.lines.aggregate(total=Sum("amount"))["total"] or Decimal("0")


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
