"""Plan vs actual: plan-to-date, actual-to-date, variance, forecast, earned value and
status, for projects, runs and teams; and the plan's revisions.

All figures are computed from the time-phased plan and the DailyCost rollup. Dates are
inclusive of `as_of`: plan and actual both run through the end of that day (UTC).
Many projects are assessed together from a fixed number of queries
(`project_summaries`, `run_summaries`); the one-project functions call the same code.
"""

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import NamedTuple, cast

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, models, transaction
from django.db.models import QuerySet, Sum
from django.utils import timezone
from django.utils.text import slugify

from accounts.models import User
from accounts.permissions import teams_user_can_create_projects_for
from billing.services import FxTable, unallocated_costs_queue_allocation
from budgets import selectors
from budgets.models import PLAN_FIELDS, Budget, BudgetLine, BudgetRevision, CostMeasure
from budgets.selectors import SpendFigures
from core import audit
from core.currencies import ZERO, money
from core.dates import month_start, next_month
from projects.models import RUN_PLAN_FIELDS, AllocationRule, Project, TrainingRun

HUNDRED = Decimal("100")
BURN_WINDOW_DAYS = 7
TREND_DAYS = selectors.FIGURE_WINDOW_DAYS
DEFAULT_MEASURE = "effective_cost"


class Status(models.TextChoices):
    ON_TRACK = "on_track", "On track"
    AT_RISK = "at_risk", "At risk"
    OVER = "over", "Over"


@dataclass(frozen=True)
class EarnedValue:
    """Earned-value figures of a run that reports progress; money in its currency.

    PV: what the plan says should have been spent by now; EV: the planned cost of the
    work actually done; AC: what was actually spent.
    """

    planned_value: Decimal
    earned_value: Decimal
    actual_cost: Decimal
    budget_at_completion: Decimal
    percent_complete: Decimal

    @property
    def cpi(self) -> Decimal | None:
        return _ratio(self.earned_value, self.actual_cost)

    @property
    def spi(self) -> Decimal | None:
        return _ratio(self.earned_value, self.planned_value)

    @property
    def eac(self) -> Decimal | None:
        """Estimate at completion: the whole run at the cost efficiency so far."""
        cpi = self.cpi
        return self.budget_at_completion / cpi if cpi else None

    def explanation(self, currency: str) -> str:
        cpi, spi, eac = self.cpi, self.spi, self.eac
        if cpi is None or eac is None:
            return (
                f"{self.percent_complete:.0f}% of the work is done and nothing has "
                f"been spent yet"
            )
        text = (
            f"Each {money(Decimal(1), currency, places=2)} spent has bought "
            f"{money(cpi, currency, places=2)} of planned work (CPI {cpi:.2f})"
        )
        if spi is not None:
            pace = "ahead of" if spi >= 1 else "behind"
            text += f"; the work is {pace} schedule (SPI {spi:.2f})"
        return (
            f"{text}; at this rate the run will cost {money(eac, currency)} "
            f"in all (EAC)"
        )


def _ratio(part: Decimal, whole: Decimal) -> Decimal | None:
    if not whole:
        return None
    return (part / whole).quantize(Decimal("0.01"), ROUND_HALF_UP)


@dataclass(frozen=True)
class Variance:
    """Plan vs actual of one scope at a moment; a project's money in the reporting
    currency (its budget converted by `plan_converted`), a run's in its own."""

    total: Decimal
    plan_to_date: Decimal
    actual_to_date: Decimal
    burn_rate: Decimal
    forecast_from_plan: Decimal
    forecast_from_burn: Decimal
    status: Status
    reason: str
    forecast_from_progress: Decimal | None = None

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
        """The worse of the forecasts: status never rests on the kinder one."""
        return max(_forecasts(self).values())

    @property
    def forecast_basis(self) -> str:
        forecasts = _forecasts(self)
        return max(forecasts, key=forecasts.__getitem__)


def _forecasts(variance: Variance) -> dict[str, Decimal]:
    forecasts = {
        "the remaining plan": variance.forecast_from_plan,
        "the burn rate of the last 7 days": variance.forecast_from_burn,
    }
    if variance.forecast_from_progress is not None:
        forecasts["the progress reported"] = variance.forecast_from_progress
    return forecasts


def _percent(part: Decimal, whole: Decimal) -> Decimal | None:
    if not whole:
        return None
    return (part * HUNDRED / whole).quantize(Decimal("0.1"), ROUND_HALF_UP)


def _days_overlap(start: date, end: date, other_start: date, other_end: date) -> int:
    """Days in the intersection of two half-open date ranges."""
    return max(0, (min(end, other_end) - max(start, other_start)).days)


class PlanLine(NamedTuple):
    """A month of a plan as the figures read it: a report reads thousands, which as
    model instances cost more than the rest of its arithmetic."""

    month: date
    amount: Decimal


PlanLines = Iterable[BudgetLine | PlanLine]


def plan_to_date(*, budget: Budget, lines: PlanLines, as_of: date) -> Decimal:
    """Each month's planned amount, spread evenly over the budget's days in that month,
    summed through the end of `as_of`."""
    active_start = budget.start_date
    active_end = budget.end_date + timedelta(days=1)
    through = as_of + timedelta(days=1)
    return sum(
        (
            _phased(line, active_start, active_end, through)
            for line in lines
            if line.month < through
        ),
        ZERO,
    )


def budget_plan_to_date(*, budget: Budget, as_of: date) -> Decimal:
    return plan_to_date(budget=budget, lines=budget.lines.all(), as_of=as_of)


def _phased(
    line: BudgetLine | PlanLine, start: date, end: date, through: date
) -> Decimal:
    month_end = next_month(line.month)
    if start <= line.month and month_end <= min(end, through):
        # A month all of whose days are active and past: its whole amount. A report
        # phases thousands of lines, nearly all of them such months.
        return line.amount
    active_days = _days_overlap(line.month, month_end, start, end)
    if not active_days:
        return ZERO
    elapsed_days = _days_overlap(line.month, min(month_end, through), start, end)
    return line.amount * elapsed_days / active_days


def plan_for_month(*, lines: PlanLines, month: date) -> Decimal:
    return sum((line.amount for line in lines if line.month == month), ZERO)


class PlanRates:
    """Each month's rate for a plan in another currency than the reporting one: the
    rate in force on the month's first day (months to come: the latest rate known);
    a month that begins before the currency's first rate takes the rate in force on
    its last day. The FX table is read once a plan in another currency turns up."""

    def __init__(self) -> None:
        self.reporting = settings.REPORTING_CURRENCY
        self._table: FxTable | None = None

    def rate(self, currency: str, month: date) -> Decimal | None:
        if currency == self.reporting:
            return Decimal(1)
        if self._table is None:
            self._table = FxTable()
        first_day = self._table.rate(currency, month)
        if first_day is not None:
            return first_day
        return self._table.rate(currency, next_month(month) - timedelta(days=1))


def plans_by_month(lines: QuerySet[BudgetLine]) -> dict[date, Decimal]:
    """Planned amounts by month over many budgets, in the reporting currency: each
    month's lines of a budget currency at that month's rate (as `plan_converted`
    converts them); a month without a rate stays unconverted. One query."""
    rates = PlanRates()
    totals: dict[date, Decimal] = defaultdict(lambda: ZERO)
    grouped = (
        lines.values_list("month", "budget__currency")
        .annotate(total=Sum("amount"))
        .order_by()
    )
    for month, currency, amount in grouped:
        rate = rates.rate(currency, month)
        totals[month] += amount * (Decimal(1) if rate is None else rate)
    return dict(totals)


@dataclass(frozen=True)
class ConvertedPlan:
    """A budget's total and monthly lines in the reporting currency, each month at its
    rate (`PlanRates`); the lines are unsaved copies. A month without any rate is
    never converted at a guessed one: its line stays in the budget's currency, and
    `missing_rates` names it for the pages to say so."""

    total: Decimal
    lines: list[PlanLine]
    rates: dict[date, Decimal]
    missing_rates: list[date]

    @property
    def missing_rate(self) -> date | None:
        return self.missing_rates[0] if self.missing_rates else None


def plan_converted(
    *, budget: Budget, lines: PlanLines, rates: PlanRates
) -> ConvertedPlan:
    """The plan in the reporting currency: each line at its month's rate, and what
    of the total no line plans at the rate of the budget's last month."""
    planned = [PlanLine(line.month, line.amount) for line in lines]
    if budget.currency == rates.reporting:
        return ConvertedPlan(budget.total, planned, {}, [])
    last_month = month_start(budget.end_date)
    months = sorted({line.month for line in planned} | {last_month})
    found = {month: rates.rate(budget.currency, month) for month in months}
    known = {month: rate for month, rate in found.items() if rate is not None}
    converted = [
        PlanLine(line.month, line.amount * known.get(line.month, Decimal(1)))
        for line in planned
    ]
    unplanned = budget.total - sum((line.amount for line in planned), ZERO)
    total = sum((line.amount for line in converted), ZERO)
    return ConvertedPlan(
        total=total + unplanned * known.get(last_month, Decimal(1)),
        lines=converted,
        rates=known,
        missing_rates=[month for month in months if month not in known],
    )


def _burn_rate(
    figures: SpendFigures, *, measure: str, start: date, as_of: date
) -> Decimal:
    """Average daily spend over the last seven days, or fewer if the work is younger."""
    window_start = max(start, as_of - timedelta(days=BURN_WINDOW_DAYS - 1))
    days = (as_of - window_start).days + 1
    if days <= 0:
        return ZERO
    return figures.between(window_start, _after(as_of), measure) / days


def _after(day: date) -> date:
    return day + timedelta(days=1)


def _remaining_days(as_of: date, end: date) -> int:
    return max(0, (end - as_of).days)


@dataclass(frozen=True)
class ProjectSummary:
    """What the dashboard, the project page and the alert rules read of one project."""

    project: Project
    budget: Budget | None
    variance: Variance | None
    month_plan: Decimal
    month_actual: Decimal
    provisional: Decimal
    daily: dict[date, Decimal]
    as_of: date
    plan: ConvertedPlan | None = None  # the budget in the reporting currency

    @property
    def status(self) -> str:
        return self.variance.status if self.variance else "no_budget"

    @property
    def currency(self) -> str:
        """The currency of the figures: the reporting one, the budget converted (see
        `plan.missing_rates` for months without a rate)."""
        return settings.REPORTING_CURRENCY

    @property
    def trend(self) -> list[tuple[date, Decimal]]:
        first = self.as_of - timedelta(days=TREND_DAYS - 1)
        days = (first + timedelta(days=offset) for offset in range(TREND_DAYS))
        return [(day, self.daily.get(day, ZERO)) for day in days]

    @property
    def trend_id(self) -> str:
        return f"trend-{self.project.pk}"

    @property
    def final(self) -> Decimal:
        """Spend to date that providers will no longer restate."""
        spent = self.variance.actual_to_date if self.variance else ZERO
        return spent - self.provisional


def budgets_of(project_ids: Sequence[int]) -> dict[int, Budget]:
    """Budgets by project id: one query."""
    budgets = Budget.objects.filter(project_id__in=project_ids)
    return {budget.project_id: budget for budget in budgets}


def plan_lines(budgets: Iterable[Budget]) -> dict[int, list[PlanLine]]:
    """The lines of each budget, by budget id: one query."""
    lines: dict[int, list[PlanLine]] = defaultdict(list)
    rows = BudgetLine.objects.filter(budget__in=list(budgets)).values_list(
        "budget_id", "month", "amount"
    )
    for budget_id, month, amount in rows:
        lines[budget_id].append(PlanLine(month, amount))
    return lines


def project_summaries(
    *, projects: Iterable[Project], as_of: date, days: int = TREND_DAYS
) -> list[ProjectSummary]:
    """Plan vs actual of many projects from five queries (four for a whole month),
    in the order given, with the spend of each of the last `days` days: the trend
    and the anomaly rule read TREND_DAYS; pages without them pass
    BURN_WINDOW_DAYS, all the burn rate reads."""
    projects = list(projects)
    ids = [project.pk for project in projects]
    budgets = budgets_of(ids)
    lines = plan_lines(budgets.values())
    figures = selectors.spend_figures(
        scope="project",
        ids=ids,
        as_of=as_of,
        measures=_measures_of(budgets),
        days=days,
    )
    rates = PlanRates()
    plans = {
        project_id: plan_converted(
            budget=budget, lines=lines.get(budget.pk, []), rates=rates
        )
        for project_id, budget in budgets.items()
    }
    return [
        _project_summary(
            project,
            budgets.get(project.pk),
            plans.get(project.pk),
            figures[project.pk],
            as_of,
        )
        for project in projects
    ]


def _measures_of(budgets: dict[int, Budget]) -> set[str]:
    """The cost measures that these budgets track, and the default one (spend of a
    project or run without a budget)."""
    return {DEFAULT_MEASURE, *(budget.cost_measure for budget in budgets.values())}


def project_summary(*, project: Project, as_of: date) -> ProjectSummary:
    return project_summaries(projects=[project], as_of=as_of)[0]


def project_variance(*, project: Project, as_of: date) -> Variance | None:
    """Plan vs actual of a project; None when it has no budget yet."""
    return project_summary(project=project, as_of=as_of).variance


def _project_summary(
    project: Project,
    budget: Budget | None,
    plan: ConvertedPlan | None,
    figures: SpendFigures,
    as_of: date,
) -> ProjectSummary:
    measure = budget.cost_measure if budget else DEFAULT_MEASURE
    return ProjectSummary(
        project=project,
        budget=budget,
        variance=_budget_variance(project, budget, plan, figures, as_of)
        if budget and plan
        else None,
        month_plan=plan_for_month(
            lines=plan.lines if plan else [], month=month_start(as_of)
        ),
        month_actual=figures.month_to_date[measure],
        provisional=figures.provisional[measure],
        daily={day: values[measure] for day, values in figures.daily.items()},
        as_of=as_of,
        plan=plan,
    )


def _budget_variance(
    project: Project,
    budget: Budget,
    plan: ConvertedPlan,
    figures: SpendFigures,
    as_of: date,
) -> Variance:
    """Plan vs actual in the reporting currency: the plan converted (`plan`)."""
    measure = budget.cost_measure
    return _assess(
        subject=f"Project {project.name}",
        total=plan.total,
        currency=settings.REPORTING_CURRENCY,
        plan=plan_to_date(budget=budget, lines=plan.lines, as_of=as_of),
        actual=figures.to_date[measure],
        burn=_burn_rate(figures, measure=measure, start=budget.start_date, as_of=as_of),
        remaining_days=_remaining_days(as_of, budget.end_date),
        tolerance=budget.tolerance_percent,
    )


def budget_preview(
    *, project: Project, budget: Budget, lines: Sequence[BudgetLine], as_of: date
) -> Variance:
    """What the status and forecast would be with an unsaved plan."""
    figures = selectors.spend_figures(scope="project", ids=[project.pk], as_of=as_of)
    plan = plan_converted(budget=budget, lines=lines, rates=PlanRates())
    return _budget_variance(project, budget, plan, figures[project.pk], as_of)


@dataclass(frozen=True)
class RunSummary:
    run: TrainingRun
    variance: Variance
    gpu_hours: Decimal
    earned_value: EarnedValue | None


def run_summaries(
    *,
    runs: Iterable[TrainingRun],
    as_of: date,
    budgets: dict[int, Budget] | None = None,
) -> list[RunSummary]:
    """Plan vs actual of many runs, in the budget's cost measure and with its
    tolerance: four queries however many runs (three for a whole month), one fewer
    if the budgets (by project id) are given."""
    runs = list(runs)
    if budgets is None:
        budgets = budgets_of(sorted({run.project_id for run in runs}))
    figures = selectors.spend_figures(
        scope="training_run",
        ids=[run.pk for run in runs],
        as_of=as_of,
        measures=_measures_of(budgets),
        days=BURN_WINDOW_DAYS,
    )
    return [
        _run_summary(run, budgets.get(run.project_id), figures[run.pk], as_of)
        for run in runs
    ]


def run_variance(*, run: TrainingRun, as_of: date, tolerance: Decimal) -> Variance:
    figures = selectors.spend_figures(
        scope="training_run", ids=[run.pk], as_of=as_of, days=BURN_WINDOW_DAYS
    )
    budget = getattr(run.project, "budget", None)
    measure = budget.cost_measure if budget else DEFAULT_MEASURE
    return _run_assessment(run, figures[run.pk], measure, tolerance, as_of)[0]


def _run_summary(
    run: TrainingRun, budget: Budget | None, figures: SpendFigures, as_of: date
) -> RunSummary:
    measure = budget.cost_measure if budget else DEFAULT_MEASURE
    tolerance = budget.tolerance_percent if budget else ZERO
    variance, earned = _run_assessment(run, figures, measure, tolerance, as_of)
    return RunSummary(
        run=run, variance=variance, gpu_hours=figures.gpu_hours, earned_value=earned
    )


def _run_assessment(
    run: TrainingRun,
    figures: SpendFigures,
    measure: str,
    tolerance: Decimal,
    as_of: date,
) -> tuple[Variance, EarnedValue | None]:
    """A run's plan is its planned cost, spread evenly over its dates."""
    run_days = (run.end_date - run.start_date).days + 1
    elapsed = min(max((as_of - run.start_date).days + 1, 0), run_days)
    plan = run.planned_cost * elapsed / run_days
    actual = figures.to_date[measure]
    earned = _earned_value(run, plan, actual)
    variance = _assess(
        subject=f"Run {run.name}",
        total=run.planned_cost,
        currency=run.currency,
        plan=plan,
        actual=actual,
        burn=_burn_rate(figures, measure=measure, start=run.start_date, as_of=as_of),
        remaining_days=_remaining_days(as_of, run.end_date),
        tolerance=tolerance,
        forecast_from_progress=earned.eac if earned else None,
    )
    gpu_hours = figures.gpu_hours
    if run.planned_gpu_hours and gpu_hours > run.planned_gpu_hours:
        variance = replace(
            variance, status=Status.OVER, reason=_gpu_hours_reason(run, gpu_hours)
        )
    return variance, earned


def _gpu_hours_reason(run: TrainingRun, gpu_hours: Decimal) -> str:
    over = _percent(gpu_hours - run.planned_gpu_hours, run.planned_gpu_hours)
    return (
        f"Run {run.name} is {_signed_words(over)} plan: "
        f"{gpu_hours.quantize(Decimal('1'), ROUND_HALF_UP):,} of "
        f"{run.planned_gpu_hours.quantize(Decimal('1'), ROUND_HALF_UP):,} planned "
        f"GPU-hours used at "
        f"{money(run.rate_per_gpu_hour, run.currency, places=2)}/GPU-hour"
    )


def _earned_value(
    run: TrainingRun, planned_value: Decimal, actual: Decimal
) -> EarnedValue | None:
    units_done, units_planned = run.units_done, run.units_planned
    if not run.progress_unit or units_done is None or not units_planned:
        return None
    done = min(units_done / units_planned, Decimal(1))
    return EarnedValue(
        planned_value=planned_value,
        earned_value=run.planned_cost * done,
        actual_cost=actual,
        budget_at_completion=run.planned_cost,
        percent_complete=(done * HUNDRED).quantize(Decimal("0.1"), ROUND_HALF_UP),
    )


def _signed_words(percent: Decimal | None) -> str:
    if percent is None:
        return "off"
    whole = percent.quantize(Decimal("1"), ROUND_HALF_UP)
    return f"{abs(whole)}% over" if whole >= 0 else f"{abs(whole)}% under"


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
    forecast_from_progress: Decimal | None = None,
) -> Variance:
    variance = Variance(
        total=total,
        plan_to_date=plan,
        actual_to_date=actual,
        burn_rate=burn,
        forecast_from_plan=actual + max(total - plan, ZERO),
        forecast_from_burn=actual + burn * remaining_days,
        forecast_from_progress=forecast_from_progress,
        status=Status.ON_TRACK,
        reason="",
    )
    status, reason = _status(subject, variance, currency, tolerance)
    return replace(variance, status=status, reason=reason)


def _status(
    subject: str, v: Variance, currency: str, tolerance: Decimal
) -> tuple[Status, str]:
    spent = money(v.actual_to_date, currency)
    total = v.total
    if total == 0:
        if v.actual_to_date > 0:
            return Status.OVER, f"{subject} has no budget but has spent {spent}"
        return Status.ON_TRACK, f"{subject} has no budget and no spend yet"
    if v.actual_to_date > total:
        return Status.OVER, (
            f"{subject} is {_percent(v.actual_to_date - total, total):.0f}% over "
            f"budget: {spent} spent of {money(total, currency)}"
        )
    variance_percent = v.variance_percent
    if variance_percent is not None and variance_percent > tolerance:
        return Status.AT_RISK, (
            f"{subject} is {variance_percent:.0f}% over plan to date: "
            f"{spent} spent vs {money(v.plan_to_date, currency)} planned"
        )
    if v.forecast > total * (1 + tolerance / HUNDRED):
        return Status.AT_RISK, (
            f"{subject} is forecast to finish at {money(v.forecast, currency)} "
            f"from {v.forecast_basis}, {_percent(v.forecast - total, total):.0f}% "
            f"over its {money(total, currency)} budget"
        )
    if variance_percent is None:
        return Status.ON_TRACK, f"{subject} has spent {spent}; nothing was planned yet"
    return Status.ON_TRACK, (
        f"{subject} is on plan: {spent} spent vs "
        f"{money(v.plan_to_date, currency)} planned to date"
    )


@dataclass(frozen=True)
class MeasureTotals:
    """Projects whose budgets track one cost measure, added up (reporting currency)."""

    measure: str
    budget: Decimal = ZERO
    plan_to_date: Decimal = ZERO
    actual_to_date: Decimal = ZERO
    forecast: Decimal = ZERO

    @property
    def variance(self) -> Decimal:
        return self.actual_to_date - self.plan_to_date

    @property
    def variance_percent(self) -> Decimal | None:
        return _percent(self.variance, self.plan_to_date)

    @property
    def measure_label(self) -> str:
        return dict(CostMeasure.choices).get(self.measure, self.measure)

    def plus(self, variance: Variance) -> "MeasureTotals":
        return replace(
            self,
            budget=self.budget + variance.total,
            plan_to_date=self.plan_to_date + variance.plan_to_date,
            actual_to_date=self.actual_to_date + variance.actual_to_date,
            forecast=self.forecast + variance.forecast,
        )


@dataclass(frozen=True)
class TeamVariance:
    """A team's projects with a budget, added up measure by measure: budgets that
    track different cost measures are never added together. The flat figures
    (`budget`, ...) are those of the one measure, None when there are several.
    Budgets whose currency had no FX rate are left out (`unconverted`)."""

    measures: list[MeasureTotals]
    at_risk: int
    over: int
    unconverted: int = 0

    @property
    def mixed_measures(self) -> bool:
        return len(self.measures) > 1

    def _single(self, name: str) -> Decimal | None:
        if self.mixed_measures:
            return None
        return getattr(self.measures[0], name) if self.measures else ZERO

    @property
    def budget(self) -> Decimal | None:
        return self._single("budget")

    @property
    def plan_to_date(self) -> Decimal | None:
        return self._single("plan_to_date")

    @property
    def actual_to_date(self) -> Decimal | None:
        return self._single("actual_to_date")

    @property
    def forecast(self) -> Decimal | None:
        return self._single("forecast")

    @property
    def variance(self) -> Decimal | None:
        return self._single("variance")

    @property
    def variance_percent(self) -> Decimal | None:
        return self.measures[0].variance_percent if len(self.measures) == 1 else None


def team_variance(summaries: Iterable[ProjectSummary]) -> TeamVariance:
    by_measure: dict[str, MeasureTotals] = {}
    variances: list[Variance] = []
    unconverted = 0
    for summary in summaries:
        budget, variance = summary.budget, summary.variance
        if budget is None or variance is None:
            continue
        variances.append(variance)
        if summary.plan and summary.plan.missing_rate:
            unconverted += 1
            continue
        measure = budget.cost_measure
        totals = by_measure.get(measure, MeasureTotals(measure))
        by_measure[measure] = totals.plus(variance)
    return TeamVariance(
        measures=[by_measure[m] for m in sorted(by_measure)],
        at_risk=sum(1 for v in variances if v.status == Status.AT_RISK),
        over=sum(1 for v in variances if v.status == Status.OVER),
        unconverted=unconverted,
    )


@dataclass(frozen=True)
class MonthFigures:
    month: date
    plan: Decimal
    actual: Decimal | None  # None for months still to come
    # The month in progress is compared with its plan to date, not its whole plan.
    plan_to_date: Decimal | None = None

    @property
    def compared_plan(self) -> Decimal:
        return self.plan if self.plan_to_date is None else self.plan_to_date

    @property
    def variance(self) -> Decimal | None:
        return None if self.actual is None else self.actual - self.compared_plan

    @property
    def variance_percent(self) -> Decimal | None:
        if self.actual is None:
            return None
        return _percent(self.actual - self.compared_plan, self.compared_plan)


def project_months(*, project: Project, as_of: date) -> list[MonthFigures]:
    """Plan and actual of each month of the budget."""
    budget = project.budget
    actual_by_month = selectors.actual_by_month(
        measure=budget.cost_measure, project=project
    )
    plan_by_month: dict[date, Decimal] = defaultdict(Decimal)
    plan = plan_converted(budget=budget, lines=budget.lines.all(), rates=PlanRates())
    for line in plan.lines:
        plan_by_month[line.month] += line.amount
    months = []
    month = month_start(budget.start_date)
    while month <= budget.end_date:
        actual = actual_by_month.get(month, ZERO) if month <= as_of else None
        to_date = None
        if month == month_start(as_of) and as_of < next_month(month) - timedelta(
            days=1
        ):
            to_date = plan_to_date(
                budget=budget,
                lines=[line for line in plan.lines if line.month == month],
                as_of=as_of,
            )
        months.append(
            MonthFigures(month, plan_by_month.get(month, ZERO), actual, to_date)
        )
        month = next_month(month)
    return months


def project_cumulative_by_month(*, project: Project, as_of: date) -> dict:
    """Cumulative plan and actual at each month end of the budget, for the chart."""
    labels: list[str] = []
    plan: list[Decimal] = []
    actual: list[Decimal | None] = []
    plan_total = actual_total = ZERO
    for figures in project_months(project=project, as_of=as_of):
        plan_total += figures.plan
        labels.append(f"{figures.month:%b %Y}")
        plan.append(plan_total)
        if figures.actual is None:
            actual.append(None)
        else:
            actual_total += figures.actual
            actual.append(actual_total)
    return {"labels": labels, "plan": plan, "actual": actual}


def run_progress_report(
    *,
    run: TrainingRun,
    status: str | None = None,
    units_done: Decimal | None = None,
) -> TrainingRun:
    """What a running job reports; the plan itself changes only through the plan."""
    if status is not None:
        run.status = status
    if units_done is not None:
        run.units_done = units_done
    run.full_clean()
    run.save(update_fields=["status", "units_done"])
    return run


# The plan and its revisions ------------------------------------------------------


def _field(model: type[models.Model], name: str) -> models.Field:
    return cast(models.Field, model._meta.get_field(name))


def _plan_value(model: type[models.Model], name: str, value) -> str | bool | None:
    """A plan value as JSON-safe text; decimals at the field's places, so that 1000
    and 1000.00 are the same plan."""
    field = _field(model, name)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(field, models.DecimalField):
        return f"{Decimal(value):.{field.decimal_places}f}"
    return str(value)


def _as_dict(item, names: Sequence[str]) -> dict:
    return item if isinstance(item, dict) else {n: getattr(item, n) for n in names}


def plan_snapshot(
    *,
    budget: Budget,
    lines: Iterable[BudgetLine | dict],
    runs: Iterable[TrainingRun | dict] = (),
) -> dict:
    """A budget's plan (its fields, monthly lines and planned runs) as JSON-safe
    values: what a revision records and compares."""
    line_dicts = [_as_dict(line, ("month", "category", "amount")) for line in lines]
    run_dicts = [_as_dict(run, ("id", *RUN_PLAN_FIELDS)) for run in runs]
    return {
        **{
            name: _plan_value(Budget, name, getattr(budget, name))
            for name in PLAN_FIELDS
        },
        "lines": sorted(
            (
                {
                    "month": str(line["month"]),
                    "category": line.get("category") or "",
                    "amount": _plan_value(BudgetLine, "amount", line["amount"]),
                }
                for line in line_dicts
            ),
            key=lambda line: (line["month"], line["category"]),
        ),
        "runs": sorted(
            (
                {"id": run.get("id")}
                | {
                    name: _plan_value(TrainingRun, name, run.get(name))
                    for name in RUN_PLAN_FIELDS
                }
                for run in run_dicts
            ),
            key=lambda run: (run["id"] is None, run["id"] or 0, run["name"]),
        ),
    }


def _plan_apply(budget: Budget, snapshot: dict) -> None:
    for name in PLAN_FIELDS:
        setattr(budget, name, _field(Budget, name).to_python(snapshot[name]))
    budget.save()
    budget.lines.all().delete()
    BudgetLine.objects.bulk_create(
        BudgetLine(
            budget=budget,
            month=date.fromisoformat(line["month"]),
            category=line["category"],
            amount=Decimal(line["amount"]),
        )
        for line in snapshot["lines"]
    )
    for planned in snapshot.get("runs", []):
        values = {
            name: _field(TrainingRun, name).to_python(planned[name])
            for name in RUN_PLAN_FIELDS
        }
        values["progress_unit"] = values["progress_unit"] or ""
        if planned["id"]:
            TrainingRun.objects.filter(pk=planned["id"], project=budget.project).update(
                **values
            )
        else:
            TrainingRun.objects.create(project=budget.project, **values)


@dataclass(frozen=True)
class PlanSaved:
    budget: Budget
    revision: BudgetRevision | None  # set when the change waits for finance


@transaction.atomic
def budget_save_plan(
    *,
    budget: Budget,
    lines: Sequence[dict],
    runs: Sequence[dict],
    user: User,
    reason: str = "",
) -> PlanSaved:
    """Save a draft budget and its monthly lines together, or neither.

    `budget` carries the validated plan fields (not saved yet); `lines` are the
    months, categories and amounts; `runs` the plan fields of planned runs, with
    their id when they exist. An approved budget keeps its plan: the change becomes
    a revision that finance approves or rejects. A newer proposal replaces a pending
    one.
    """
    proposal = plan_snapshot(budget=budget, lines=lines, runs=runs)
    # Locked, and read again: an approval that committed since the form was loaded
    # is seen, so the change becomes a revision instead of undoing the approval.
    stored = (
        Budget.objects.select_for_update().filter(pk=budget.pk).first()
        if budget.pk
        else None
    )
    if stored is not None and stored.status == Budget.Status.APPROVED:
        approved = Budget.objects.select_related("project").get(pk=budget.pk)
        previous = plan_snapshot(
            budget=approved,
            lines=approved.lines.all(),
            runs=approved.project.runs.all(),
        )
        if proposal == previous:
            return PlanSaved(budget=approved, revision=None)
        approved.revisions.filter(status=BudgetRevision.Status.PENDING).update(
            status=BudgetRevision.Status.WITHDRAWN
        )
        revision = BudgetRevision.objects.create(
            budget=approved,
            proposal=proposal,
            previous=previous,
            proposed_by=user,
            reason=reason.strip(),
        )
        audit.record(
            kind=audit.Kind.BUDGET,
            action="revision proposed",
            target=approved,
            actor=user,
            details={"revision": revision.pk},
        )
        return PlanSaved(budget=approved, revision=revision)
    budget.status = Budget.Status.DRAFT
    budget.version = stored.version + 1 if stored else 1
    # Replace the lines as a set: saving form by form would trip the one-line-per-month
    # constraint when two months are swapped.
    _plan_apply(budget, proposal)
    budget.authors.add(user)
    audit.record(
        kind=audit.Kind.BUDGET,
        action="draft saved" if stored else "draft created",
        target=budget,
        actor=user,
        details={"version": budget.version},
    )
    return PlanSaved(budget=budget, revision=None)


class ApprovalRefused(Exception):
    """The draft cannot be approved by this person, or not as they saw it."""


def budget_unsaved(*, project: Project) -> Budget:
    """The budget a project without one starts from: over its dates, in the
    reporting currency."""
    return Budget(
        project=project,
        currency=settings.REPORTING_CURRENCY,
        start_date=project.start_date,
        end_date=project.end_date,
    )


@transaction.atomic
def budget_approve(*, budget: Budget, user: User, version: int) -> Budget:
    """Finance approves the draft as it was shown to them: `version` is the one on
    their page. Nobody approves a draft they created or changed. The row is locked,
    so a change saved meanwhile either lands first (and refuses the approval) or
    waits and becomes a revision."""
    budget = Budget.objects.select_for_update().get(pk=budget.pk)
    if budget.status == Budget.Status.APPROVED:
        raise ApprovalRefused("This budget is already approved.")
    if budget.authors.filter(pk=user.pk).exists():
        raise ApprovalRefused(
            "You created or changed this draft: another finance user or admin "
            "approves it."
        )
    if budget.version != version:
        raise ApprovalRefused(
            "The draft changed after you opened it, so it was not approved: "
            "review the plan as it is now, then approve it again."
        )
    budget.status = Budget.Status.APPROVED
    budget.approved_by = user
    budget.approved_at = timezone.now()
    budget.save(update_fields=["status", "approved_by", "approved_at"])
    audit.record(
        kind=audit.Kind.BUDGET,
        action="approved",
        target=budget,
        actor=user,
        details={"version": version},
    )
    return budget


@dataclass(frozen=True)
class Recognition:
    """How a project's costs are recognised: the fields of its allocation rule. An
    empty value of a tag rule stands for the project's slug."""

    match_on: str
    tag_key: str
    value: str


# Paths under /projects/ that are pages, not projects.
RESERVED_SLUGS = {"new"}
SLUG_ATTEMPTS = 20


@transaction.atomic
def project_create(
    *,
    project: Project,
    budget: Budget,
    lines: Sequence[dict],
    recognition: Recognition,
    user: User,
) -> Project:
    """Create a project with its first budget (a draft that finance approves) and the
    allocation rule that recognises its costs, or none of them.

    `project` and `budget` carry validated fields, unsaved; the budget runs over the
    project's dates. Once committed, a worker gives the new rule the unallocated costs
    already imported that it matches. A name the team already uses, in any case, is
    refused as a ValidationError on `name`, also when two people create it at once.
    """
    if not teams_user_can_create_projects_for(user).filter(pk=project.team_id).exists():
        raise PermissionDenied("Team leads, finance and admins create projects.")
    _project_insert(project)
    rule = AllocationRule(
        project=project,
        match_on=recognition.match_on,
        tag_key=recognition.tag_key,
        value=recognition.value or project.slug,
    )
    _refuse_a_rule_that_would_never_win(rule)
    rule.save()
    audit.record(
        kind=audit.Kind.ALLOCATION_RULE,
        action="rule created with the project",
        target=rule,
        actor=user,
    )
    budget.project = project
    budget.start_date, budget.end_date = project.start_date, project.end_date
    budget.status = Budget.Status.DRAFT
    budget_save_plan(budget=budget, lines=lines, runs=[], user=user)
    unallocated_costs_queue_allocation(rule=rule)
    return project


def _project_insert(project: Project) -> None:
    """Save under a free slug made from the name; the database decides races."""
    base = slugify(project.name)[:100] or "project"
    for attempt in range(SLUG_ATTEMPTS):
        project.slug = base if attempt == 0 else f"{base}-{attempt + 1}"
        if project.slug in RESERVED_SLUGS:
            continue
        try:
            with transaction.atomic():
                project.save()
            return
        except IntegrityError:
            # Unique violations wait for the other transaction: its row is visible now.
            if Project.objects.filter(
                team_id=project.team_id, name__iexact=project.name
            ).exists():
                raise ValidationError(
                    {"name": "This team already has a project of that name."}
                ) from None
    raise ValidationError({"name": "Too many projects have this name: choose another."})


def _refuse_a_rule_that_would_never_win(rule: AllocationRule) -> None:
    same = AllocationRule.objects.filter(
        is_active=True,
        match_on=rule.match_on,
        tag_key=rule.tag_key,
        value=rule.value,
        priority__lte=rule.priority,
    ).select_related("project")
    if earlier := same.first():
        raise ValidationError(
            {
                "value": f"These costs already go to {earlier.project} by its rule "
                f"({earlier.describe()}): choose what recognises this project."
            }
        )


@transaction.atomic
def allocation_rule_create(*, rule: AllocationRule) -> AllocationRule:
    """A new rule, checked as the model and a new project's rule are: a tag rule names
    its key, a run is the project's, and a rule an earlier one would always beat is
    refused. Once committed, a worker gives it the unallocated costs it matches."""
    rule.full_clean()
    _refuse_a_rule_that_would_never_win(rule)
    rule.save()
    unallocated_costs_queue_allocation(rule=rule)
    return rule


class RevisionRefused(Exception):
    """The revision cannot be decided by this person, or not any more."""


@transaction.atomic
def budget_revision_decide(
    *, revision: BudgetRevision, user: User, approve: bool, comment: str
) -> BudgetRevision:
    """Finance approves (the plan changes) or rejects (it stays) a pending revision."""
    revision = BudgetRevision.objects.select_for_update().get(pk=revision.pk)
    if revision.status != BudgetRevision.Status.PENDING:
        raise RevisionRefused(
            f"This revision was already {revision.get_status_display().lower()}."
        )
    if revision.proposed_by_id == user.pk:
        raise RevisionRefused(
            "You proposed this revision: another finance user or admin decides it."
        )
    if approve:
        budget = Budget.objects.select_for_update().get(pk=revision.budget_id)
        _plan_apply(budget, revision.proposal)
        budget.approved_by, budget.approved_at = user, timezone.now()
        budget.save(update_fields=["approved_by", "approved_at"])
    revision.status = (
        BudgetRevision.Status.APPROVED if approve else BudgetRevision.Status.REJECTED
    )
    revision.decided_by, revision.decided_at = user, timezone.now()
    revision.comment = comment
    revision.save()
    audit.record(
        kind=audit.Kind.BUDGET,
        action="revision approved" if approve else "revision rejected",
        target=revision.budget,
        actor=user,
        details={"revision": revision.pk, "comment": comment},
    )
    return revision


def revision_changes(revision: BudgetRevision) -> list[tuple[str, str, str]]:
    """What a revision changes, as (what, before, after) in words."""
    before, after = revision.previous, revision.proposal
    currency = after["currency"]

    def words(value) -> str:
        if isinstance(value, bool):
            return "Yes" if value else "No"
        return str(value)

    def amount(value: str | None) -> str:
        return "—" if value is None else money(Decimal(value), currency, places=2)

    changes = []
    for name in PLAN_FIELDS:
        if before[name] != after[name]:
            show = amount if name == "total" else words
            label = str(_field(Budget, name).verbose_name)
            changes.append((label, show(before[name]), show(after[name])))
    old_lines = {(x["month"], x["category"]): x["amount"] for x in before["lines"]}
    new_lines = {(x["month"], x["category"]): x["amount"] for x in after["lines"]}
    for key in sorted(old_lines.keys() | new_lines.keys()):
        old, new = old_lines.get(key), new_lines.get(key)
        if old != new:
            month, category = key
            label = f"{date.fromisoformat(month):%B %Y} {category}".strip()
            changes.append((label, amount(old), amount(new)))
    old_runs = {run["id"]: run for run in before.get("runs", [])}
    for run in after.get("runs", []):
        old = old_runs.get(run["id"]) if run["id"] else None
        if old is None:
            changes.append((f"New run {run['name']}", "—", _run_words(run)))
        elif old != run:
            changes.append((f"Run {old['name']}", _run_words(old), _run_words(run)))
    return changes


def _run_words(run: dict) -> str:
    hours = Decimal(run["planned_gpu_hours"])
    rate = money(Decimal(run["rate_per_gpu_hour"]), run["currency"], places=2)
    text = (
        f"{run['gpu_count']} × {run['gpu_type']}, {hours:,} GPU-hours at {rate}, "
        f"{run['start_date']} to {run['end_date']}"
    )
    if run["progress_unit"] and run["units_planned"]:
        text += f", {Decimal(run['units_planned']):,} {run['progress_unit']} planned"
    return text
