"""Plan vs actual: plan-to-date, actual-to-date, variance, forecast and status.

All figures are computed from the time-phased plan and the DailyCost rollup. Dates are
inclusive of `as_of`: plan and actual both run through the end of that day (UTC).
"""

from dataclasses import dataclass, replace
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING

from django.db import models, transaction

from budgets import selectors
from budgets.models import Budget, BudgetLine
from projects.models import Project, TrainingRun
from spendtracker.currencies import money

if TYPE_CHECKING:
    from budgets.forms import BudgetForm, BudgetLineFormSet

ZERO = Decimal("0")
HUNDRED = Decimal("100")
BURN_WINDOW_DAYS = 7


class Status(models.TextChoices):
    ON_TRACK = "on_track", "On track"
    AT_RISK = "at_risk", "At risk"
    OVER = "over", "Over"


@dataclass(frozen=True)
class Variance:
    """Plan vs actual of one scope at a moment; money in the budget's currency."""

    total: Decimal
    plan_to_date: Decimal
    actual_to_date: Decimal
    burn_rate: Decimal
    forecast_from_plan: Decimal
    forecast_from_burn: Decimal
    status: Status
    reason: str

    @property
    def variance(self) -> Decimal:
        return self.actual_to_date - self.plan_to_date

    @property
    def variance_percent(self) -> Decimal | None:
        return _percent(self.variance, self.plan_to_date)

    @property
    def used_percent(self) -> Decimal | None:
        return _percent(self.actual_to_date, self.total)

    @property
    def forecast(self) -> Decimal:
        return max(self.forecast_from_plan, self.forecast_from_burn)


def _percent(part: Decimal, whole: Decimal) -> Decimal | None:
    if not whole:
        return None
    return (part * HUNDRED / whole).quantize(Decimal("0.1"), ROUND_HALF_UP)


def month_start(day: date) -> date:
    return day.replace(day=1)


def next_month(day: date) -> date:
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)


def _days_overlap(start: date, end: date, other_start: date, other_end: date) -> int:
    """Days in the intersection of two half-open date ranges."""
    return max(0, (min(end, other_end) - max(start, other_start)).days)


def budget_plan_to_date(*, budget: Budget, as_of: date) -> Decimal:
    """Each month's planned amount, spread evenly over the budget's days in that month,
    summed through the end of `as_of`."""
    active_start = budget.start_date
    active_end = budget.end_date + timedelta(days=1)
    through = as_of + timedelta(days=1)
    planned = ZERO
    for line in budget.lines.filter(month__lt=through):
        planned += _phased(line, active_start, active_end, through)
    return planned


def _phased(line: BudgetLine, start: date, end: date, through: date) -> Decimal:
    month_end = next_month(line.month)
    active_days = _days_overlap(line.month, month_end, start, end)
    if not active_days:
        return ZERO
    elapsed_days = _days_overlap(line.month, min(month_end, through), start, end)
    return line.amount * elapsed_days / active_days


def budget_plan_for_month(*, budget: Budget, month: date) -> Decimal:
    return sum(
        (line.amount for line in budget.lines.all() if line.month == month), ZERO
    )


def project_variance(*, project: Project, as_of: date) -> Variance | None:
    """Plan vs actual of a project; None when it has no budget yet."""
    budget = getattr(project, "budget", None)
    if budget is None:
        return None
    measure = budget.cost_measure
    actual = selectors.actual_between(
        measure=measure, end=_after(as_of), project=project
    )
    plan = budget_plan_to_date(budget=budget, as_of=as_of)
    burn = _burn_rate(
        measure=measure, as_of=as_of, start=budget.start_date, project=project
    )
    return _assess(
        subject=f"Project {project.name}",
        total=budget.total,
        currency=budget.currency,
        plan=plan,
        actual=actual,
        burn=burn,
        remaining_days=_remaining_days(as_of, budget.end_date),
        tolerance=budget.tolerance_percent,
    )


def run_variance(*, run: TrainingRun, as_of: date, tolerance: Decimal) -> Variance:
    """Plan vs actual of a run: its planned cost, spread evenly over its dates."""
    budget = getattr(run.project, "budget", None)
    measure = budget.cost_measure if budget else "effective_cost"
    actual = selectors.actual_between(
        measure=measure, end=_after(as_of), training_run=run
    )
    gpu_hours = selectors.gpu_hours_between(end=_after(as_of), training_run=run)
    run_days = (run.end_date - run.start_date).days + 1
    elapsed = min(max((as_of - run.start_date).days + 1, 0), run_days)
    plan = run.planned_cost * elapsed / run_days
    variance = _assess(
        subject=f"Run {run.name}",
        total=run.planned_cost,
        currency=run.currency,
        plan=plan,
        actual=actual,
        burn=_burn_rate(
            measure=measure, as_of=as_of, start=run.start_date, training_run=run
        ),
        remaining_days=_remaining_days(as_of, run.end_date),
        tolerance=tolerance,
    )
    if run.planned_gpu_hours and gpu_hours > run.planned_gpu_hours:
        over = _percent(gpu_hours - run.planned_gpu_hours, run.planned_gpu_hours)
        reason = (
            f"Run {run.name} is {_signed_words(over)} plan: "
            f"{gpu_hours.quantize(Decimal('1'), ROUND_HALF_UP):,} of "
            f"{run.planned_gpu_hours.quantize(Decimal('1'), ROUND_HALF_UP):,} planned "
            f"GPU-hours used at "
            f"{money(run.rate_per_gpu_hour, run.currency, places=2)}/GPU-hour"
        )
        variance = replace(variance, status=Status.OVER, reason=reason)
    return variance


def _signed_words(percent: Decimal | None) -> str:
    if percent is None:
        return "off"
    whole = percent.quantize(Decimal("1"), ROUND_HALF_UP)
    return f"{abs(whole)}% over" if whole >= 0 else f"{abs(whole)}% under"


def _after(day: date) -> date:
    return day + timedelta(days=1)


def _remaining_days(as_of: date, end: date) -> int:
    return max(0, (end - as_of).days)


def _burn_rate(*, measure: str, as_of: date, start: date, **scope) -> Decimal:
    """Average daily spend over the last seven days, or fewer if the work is younger."""
    window_start = max(start, as_of - timedelta(days=BURN_WINDOW_DAYS - 1))
    days = (as_of - window_start).days + 1
    if days <= 0:
        return ZERO
    spent = selectors.actual_between(
        measure=measure, start=window_start, end=_after(as_of), **scope
    )
    return spent / days


def _assess(
    *,
    subject: str,
    total: Decimal,
    currency: str,
    plan: Decimal,
    actual: Decimal,
    burn: Decimal,
    remaining_days: int,
    tolerance: Decimal,
) -> Variance:
    forecast_from_plan = actual + max(total - plan, ZERO)
    forecast_from_burn = actual + burn * remaining_days
    status, reason = _status(
        subject=subject,
        total=total,
        currency=currency,
        plan=plan,
        actual=actual,
        forecast=max(forecast_from_plan, forecast_from_burn),
        tolerance=tolerance,
    )
    return Variance(
        total=total,
        plan_to_date=plan,
        actual_to_date=actual,
        burn_rate=burn,
        forecast_from_plan=forecast_from_plan,
        forecast_from_burn=forecast_from_burn,
        status=status,
        reason=reason,
    )


def _status(
    *,
    subject: str,
    total: Decimal,
    currency: str,
    plan: Decimal,
    actual: Decimal,
    forecast: Decimal,
    tolerance: Decimal,
) -> tuple[Status, str]:
    spent = money(actual, currency)
    if total == 0:
        if actual > 0:
            return Status.OVER, f"{subject} has no budget but has spent {spent}"
        return Status.ON_TRACK, f"{subject} has no budget and no spend yet"
    if actual > total:
        return Status.OVER, (
            f"{subject} is {_percent(actual - total, total):.0f}% over budget: "
            f"{spent} spent of {money(total, currency)}"
        )
    variance_percent = _percent(actual - plan, plan)
    if variance_percent is not None and variance_percent > tolerance:
        return Status.AT_RISK, (
            f"{subject} is {variance_percent:.0f}% over plan to date: "
            f"{spent} spent vs {money(plan, currency)} planned"
        )
    if forecast > total * (1 + tolerance / HUNDRED):
        return Status.AT_RISK, (
            f"{subject} is forecast to finish at {money(forecast, currency)}, "
            f"{_percent(forecast - total, total):.0f}% over its "
            f"{money(total, currency)} budget"
        )
    if variance_percent is None:
        return Status.ON_TRACK, f"{subject} has spent {spent}; nothing was planned yet"
    return Status.ON_TRACK, (
        f"{subject} is on plan: {spent} spent vs "
        f"{money(plan, currency)} planned to date"
    )


@dataclass(frozen=True)
class ProjectSummary:
    """What the dashboard and list pages show for one project."""

    project: Project
    variance: Variance | None
    month_plan: Decimal
    month_actual: Decimal
    trend: list[tuple[date, Decimal]]

    @property
    def status(self) -> str:
        return self.variance.status if self.variance else "no_budget"

    @property
    def trend_id(self) -> str:
        return f"trend-{self.project.pk}"


TREND_DAYS = 30


def project_summary(*, project: Project, as_of: date) -> ProjectSummary:
    variance = project_variance(project=project, as_of=as_of)
    budget = getattr(project, "budget", None)
    measure = budget.cost_measure if budget else "effective_cost"
    this_month = month_start(as_of)
    daily = selectors.actual_by_day(
        measure=measure,
        start=as_of - timedelta(days=TREND_DAYS - 1),
        end=_after(as_of),
        project=project,
    )
    trend = [
        (day, daily.get(day, ZERO))
        for day in (
            as_of - timedelta(days=offset) for offset in range(TREND_DAYS - 1, -1, -1)
        )
    ]
    return ProjectSummary(
        project=project,
        variance=variance,
        month_plan=budget_plan_for_month(budget=budget, month=this_month)
        if budget
        else ZERO,
        month_actual=selectors.actual_between(
            measure=measure, start=this_month, end=_after(as_of), project=project
        ),
        trend=trend,
    )


def project_cumulative_by_month(*, project: Project, as_of: date) -> dict:
    """Cumulative plan and actual at each month end of the budget, for the chart."""
    budget = project.budget
    actual_by_month = selectors.actual_by_month(
        measure=budget.cost_measure, project=project
    )
    plan_by_month: dict[date, Decimal] = {}
    for line in budget.lines.all():
        plan_by_month[line.month] = plan_by_month.get(line.month, ZERO) + line.amount
    labels, plan, actual = [], [], []
    plan_total = actual_total = ZERO
    month = month_start(budget.start_date)
    while month <= budget.end_date:
        plan_total += plan_by_month.get(month, ZERO)
        actual_total += actual_by_month.get(month, ZERO)
        labels.append(f"{month:%b %Y}")
        plan.append(plan_total)
        actual.append(actual_total if month <= as_of else None)
        month = next_month(month)
    return {"labels": labels, "plan": plan, "actual": actual}


@transaction.atomic
def budget_save_plan(*, form: "BudgetForm", lines: "BudgetLineFormSet") -> Budget:
    """Save a budget and its monthly lines together, or neither.

    A change to an approved budget sends it back to draft: finance approves it again.
    """
    budget = form.save(commit=False)
    if form.has_changed() or lines.has_changed():
        budget.status = Budget.Status.DRAFT
        budget.approved_by = None
        budget.approved_at = None
    budget.save()
    # Replace the lines as a set: saving form by form would trip the one-line-per-month
    # constraint when two months are swapped.
    budget.lines.all().delete()
    BudgetLine.objects.bulk_create(
        BudgetLine(budget=budget, **line) for line in lines.kept_lines()
    )
    return budget
