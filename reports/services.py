"""The monthly finance report: one month's plan against actual, organisation → team →
project → training run, with the breakdowns finance reviews before closing the month.

Everything is read from the DailyCost rollup (amounts converted to the reporting
currency with the rate of each day) and the budgets' plan lines, with a fixed number of
queries whatever the number of projects. A report is built for a set of teams: finance
and admins see the whole organisation, leads and members their own teams (and no
unallocated spend, which belongs to no team).

Each budget tracks one cost measure (effective cost by default). A project's actual,
variance and status are in its own measure; totals over projects with different measures
are also shown measure by measure, so that nothing mixes silently.
"""

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.db.models import Q, QuerySet, Sum
from django.db.models.functions import TruncMonth
from django.utils import timezone

from accounts.models import Team
from billing.models import COST_COLUMNS, BillingSource, DailyCost
from budgets.models import Budget, BudgetLine, CostMeasure
from budgets.services import (
    DEFAULT_MEASURE,
    ProjectSummary,
    RunSummary,
    project_summaries,
    run_summaries,
)
from core.currencies import ZERO
from core.dates import month_start, next_month
from projects.models import Project, TrainingRun

HUNDRED = Decimal(100)
TREND_MONTHS = 12
MOVERS = 10
MEASURE_LABELS = dict(CostMeasure.choices)


def percent(part: Decimal, whole: Decimal) -> Decimal | None:
    if not whole:
        return None
    return (part * HUNDRED / whole).quantize(Decimal("0.1"), ROUND_HALF_UP)


@dataclass(frozen=True)
class Amounts:
    """A month's spend in every cost measure, in the reporting currency."""

    billed_cost: Decimal = ZERO
    effective_cost: Decimal = ZERO
    list_cost: Decimal = ZERO
    contracted_cost: Decimal = ZERO
    gpu_hours: Decimal = ZERO

    def __getitem__(self, measure: str) -> Decimal:
        return getattr(self, measure)

    @classmethod
    def of(cls, row: dict | None) -> "Amounts":
        if not row:
            return cls()
        names = (*COST_COLUMNS, "gpu_hours")
        return cls(**{name: row.get(name) or ZERO for name in names})


@dataclass(frozen=True)
class PlanActual:
    """Plan against actual in one cost measure."""

    measure: str
    plan: Decimal
    actual: Decimal

    @property
    def variance(self) -> Decimal:
        return self.actual - self.plan

    @property
    def variance_percent(self) -> Decimal | None:
        return percent(self.variance, self.plan)

    @property
    def measure_label(self) -> str:
        return MEASURE_LABELS.get(self.measure, self.measure)


def by_measure(rows: Iterable[PlanActual]) -> list[PlanActual]:
    """Plan and actual added up measure by measure: never across measures."""
    plans: dict[str, Decimal] = defaultdict(lambda: ZERO)
    actuals: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for row in rows:
        plans[row.measure] += row.plan
        actuals[row.measure] += row.actual
    return [PlanActual(m, plans[m], actuals[m]) for m in sorted(plans)]


@dataclass(frozen=True)
class RunReport:
    run: TrainingRun
    month_actual: Decimal
    summary: RunSummary

    @property
    def planned_cost(self) -> Decimal:
        return self.summary.variance.total

    @property
    def actual_to_date(self) -> Decimal:
        return self.summary.variance.actual_to_date

    @property
    def variance(self) -> Decimal:
        return self.summary.variance.variance

    @property
    def status(self) -> str:
        return self.summary.variance.status


@dataclass(frozen=True)
class ProjectReport:
    project: Project
    summary: ProjectSummary
    month: Amounts
    previous_month: Amounts
    ytd_plan: Decimal
    ytd: Amounts
    runs: list[RunReport]

    @property
    def measure(self) -> str:
        budget = self.summary.budget
        return budget.cost_measure if budget else DEFAULT_MEASURE

    @property
    def month_plan_actual(self) -> PlanActual:
        return PlanActual(self.measure, self.summary.month_plan, self.actual)

    @property
    def plan(self) -> Decimal:
        return self.summary.month_plan

    @property
    def actual(self) -> Decimal:
        return self.month[self.measure]

    @property
    def variance(self) -> Decimal:
        return self.actual - self.plan

    @property
    def variance_percent(self) -> Decimal | None:
        return percent(self.variance, self.plan)

    @property
    def ytd_actual(self) -> Decimal:
        return self.ytd[self.measure]

    @property
    def status(self) -> str:
        return self.summary.status

    @property
    def reason(self) -> str:
        variance = self.summary.variance
        return variance.reason if variance else "No budget yet."

    @property
    def forecast(self) -> Decimal | None:
        variance = self.summary.variance
        return variance.forecast if variance else None

    @property
    def previous_actual(self) -> Decimal:
        return self.previous_month[self.measure]

    @property
    def change(self) -> Decimal:
        """This month's actual against the previous month's, in its measure."""
        return self.actual - self.previous_actual


@dataclass(frozen=True)
class TeamReport:
    team: Team
    projects: list[ProjectReport]

    @property
    def measures(self) -> list[PlanActual]:
        return by_measure(p.month_plan_actual for p in self.projects)

    @property
    def plan(self) -> Decimal:
        return sum((p.plan for p in self.projects), ZERO)

    @property
    def actual(self) -> Decimal:
        """Each project's actual in its own measure; see `measures` when they differ."""
        return sum((p.actual for p in self.projects), ZERO)

    @property
    def variance(self) -> Decimal:
        return sum((p.variance for p in self.projects), ZERO)

    @property
    def variance_percent(self) -> Decimal | None:
        return percent(self.variance, self.plan)

    @property
    def mixed_measures(self) -> bool:
        return len(self.measures) > 1


@dataclass(frozen=True)
class Breakdown:
    """A month's spend by one dimension (provider, service category, ...)."""

    name: str
    amounts: Amounts

    @property
    def cost_per_gpu_hour(self) -> Decimal | None:
        if not self.amounts.gpu_hours:
            return None
        return (self.amounts.effective_cost / self.amounts.gpu_hours).quantize(
            Decimal("0.01"), ROUND_HALF_UP
        )


@dataclass(frozen=True)
class TrendMonth:
    month: date
    plan: Decimal
    actual: Decimal  # effective cost, every team in the report


@dataclass(frozen=True)
class Reconciliation:
    """Projects plus unallocated against every converted cost of the month."""

    records_total: Decimal
    report_total: Decimal

    @property
    def difference(self) -> Decimal:
        return self.report_total - self.records_total


@dataclass
class MonthlyReport:
    month: date
    currency: str
    as_of: date
    whole_organisation: bool
    teams: list[TeamReport]
    total: Amounts
    provisional: Amounts
    unallocated: Amounts
    unconverted: dict[str, Decimal]
    by_provider: list[Breakdown]
    by_service_category: list[Breakdown]
    by_charge_category: list[Breakdown]
    trend: list[TrendMonth]
    reconciliation: Reconciliation
    sources: list[BillingSource] = field(default_factory=list)
    status: str = "open"

    @property
    def projects(self) -> list[ProjectReport]:
        return [project for team in self.teams for project in team.projects]

    @property
    def measures(self) -> list[PlanActual]:
        return by_measure(p.month_plan_actual for p in self.projects)

    @property
    def plan(self) -> Decimal:
        return sum((team.plan for team in self.teams), ZERO)

    @property
    def variance(self) -> Decimal:
        return sum((team.variance for team in self.teams), ZERO)

    @property
    def variance_percent(self) -> Decimal | None:
        return percent(self.variance, self.plan)

    @property
    def provisional_percent(self) -> Decimal | None:
        return percent(self.provisional.effective_cost, self.total.effective_cost)

    @property
    def complete(self) -> bool:
        """Every enabled source is final through the end of the month."""
        end = next_month(self.month)
        return all(
            source.data_complete_through and source.data_complete_through.date() >= end
            for source in self.sources
        )

    @property
    def incomplete_sources(self) -> list[BillingSource]:
        end = next_month(self.month)
        return [
            source
            for source in self.sources
            if not source.data_complete_through
            or source.data_complete_through.date() < end
        ]

    @property
    def movers(self) -> list[ProjectReport]:
        """The projects whose spend moved most against the previous month."""
        moved = [p for p in self.projects if p.change]
        return sorted(moved, key=lambda p: abs(p.change), reverse=True)[:MOVERS]

    @property
    def previous_month(self) -> date:
        return month_start(self.month - timedelta(days=1))

    def as_json(self) -> dict:
        """The report's figures, every amount an exact decimal string."""
        return {
            "month": f"{self.month:%Y-%m}",
            "currency": self.currency,
            "status": self.status,
            "complete": self.complete,
            "totals": {
                "plan": str(self.plan),
                "billed": str(self.total.billed_cost),
                "effective": str(self.total.effective_cost),
                "variance": str(self.variance),
                "unallocated": str(self.unallocated.effective_cost),
                "provisional": str(self.provisional.effective_cost),
                "by_measure": [_plan_actual_json(row) for row in self.measures],
            },
            "teams": [
                {
                    "slug": team.team.slug,
                    "name": team.team.name,
                    "plan": str(team.plan),
                    "variance": str(team.variance),
                    "by_measure": [_plan_actual_json(row) for row in team.measures],
                    "projects": [_project_json(p) for p in team.projects],
                }
                for team in self.teams
            ],
            "unallocated": {
                "billed": str(self.unallocated.billed_cost),
                "effective": str(self.unallocated.effective_cost),
            },
            "unconverted": {c: str(a) for c, a in sorted(self.unconverted.items())},
            "by_provider": [_breakdown_json(row) for row in self.by_provider],
            "by_service_category": [
                _breakdown_json(row) for row in self.by_service_category
            ],
            "by_charge_category": [
                _breakdown_json(row) for row in self.by_charge_category
            ],
            "trend": [
                {
                    "month": f"{row.month:%Y-%m}",
                    "plan": str(row.plan),
                    "actual": str(row.actual),
                }
                for row in self.trend
            ],
            "reconciliation": {
                "records_total": str(self.reconciliation.records_total),
                "report_total": str(self.reconciliation.report_total),
                "difference": str(self.reconciliation.difference),
            },
        }


def _plan_actual_json(row: PlanActual) -> dict:
    return {
        "measure": row.measure,
        "plan": str(row.plan),
        "actual": str(row.actual),
        "variance": str(row.variance),
    }


def _project_json(project: ProjectReport) -> dict:
    forecast = project.forecast
    return {
        "slug": project.project.slug,
        "name": project.project.name,
        "measure": project.measure,
        "plan": str(project.plan),
        "actual": str(project.actual),
        "billed": str(project.month.billed_cost),
        "effective": str(project.month.effective_cost),
        "variance": str(project.variance),
        "ytd_plan": str(project.ytd_plan),
        "ytd_actual": str(project.ytd_actual),
        "forecast": None if forecast is None else str(forecast),
        "status": project.status,
        "reason": project.reason,
        "runs": [
            {
                "name": run.run.name,
                "external_id": run.run.external_id,
                "month_actual": str(run.month_actual),
                "planned_cost": str(run.planned_cost),
                "actual_to_date": str(run.actual_to_date),
                "status": run.status,
            }
            for run in project.runs
        ],
    }


def _breakdown_json(row: Breakdown) -> dict:
    cost_per_gpu_hour = row.cost_per_gpu_hour
    return {
        "name": row.name,
        "billed": str(row.amounts.billed_cost),
        "effective": str(row.amounts.effective_cost),
        "gpu_hours": str(row.amounts.gpu_hours),
        "cost_per_gpu_hour": None
        if cost_per_gpu_hour is None
        else str(cost_per_gpu_hour),
    }


def _sums() -> dict[str, Sum]:
    return {
        **{column: Sum(column) for column in COST_COLUMNS},
        "gpu_hours": Sum("gpu_hours"),
    }


def _grouped(rows: QuerySet[DailyCost], key: str) -> dict:
    return {row[key]: Amounts.of(row) for row in rows.values(key).annotate(**_sums())}


def _breakdown(rows: QuerySet[DailyCost], key: str) -> list[Breakdown]:
    grouped = _grouped(rows, key)
    return sorted(
        (Breakdown(name or "(none)", amounts) for name, amounts in grouped.items()),
        key=lambda row: row.amounts.effective_cost,
        reverse=True,
    )


def report_months(*, teams: QuerySet[Team], whole_organisation: bool) -> list[dict]:
    """Every month with a plan or spend, newest first: spend, plan and provisional."""
    rows = _scoped(teams, whole_organisation).filter(fx_rate__isnull=False)
    spend = {
        row["month"]: row
        for row in rows.annotate(month=TruncMonth("date"))
        .values("month")
        .annotate(
            effective=Sum("effective_cost"),
            provisional=Sum("effective_cost", filter=Q(is_provisional=True)),
        )
        .order_by()
    }
    plans = dict(
        BudgetLine.objects.filter(budget__project__team__in=teams)
        .values_list("month")
        .annotate(plan=Sum("amount"))
        .order_by()
    )
    today = timezone.now().date()
    months = sorted(
        {m for m in (*spend, *plans) if m <= today},
        reverse=True,
    )
    nothing: dict[str, Decimal] = {}
    return [
        {
            "month": month,
            "actual": spend.get(month, nothing).get("effective") or ZERO,
            "provisional": spend.get(month, nothing).get("provisional") or ZERO,
            "plan": plans.get(month, ZERO),
        }
        for month in months
    ]


def _scoped(teams: QuerySet[Team], whole_organisation: bool) -> QuerySet[DailyCost]:
    if whole_organisation:
        return DailyCost.objects.all()
    return DailyCost.objects.filter(project__team__in=teams)


def monthly_report(
    *, month: date, teams: QuerySet[Team], whole_organisation: bool
) -> MonthlyReport:
    """The report of `month` for `teams`; with `whole_organisation`, also the spend
    no project has (unallocated) and the organisation's totals."""
    month = month_start(month)
    end = next_month(month)
    as_of = min(end - timedelta(days=1), timezone.now().date())
    previous = month_start(month - timedelta(days=1))
    year_start = month.replace(month=1)
    scoped = _scoped(teams, whole_organisation)
    converted = scoped.filter(fx_rate__isnull=False)
    this_month = converted.filter(date__gte=month, date__lt=end)

    projects = list(
        Project.objects.filter(team__in=teams)
        .exclude(status=Project.Status.CANCELLED)
        .select_related("team", "owner")
        .order_by("team__name", "name")
    )
    summaries = project_summaries(projects=projects, as_of=as_of)
    budgets = {s.project.pk: s.budget for s in summaries if s.budget}
    month_by_project = _grouped(this_month, "project")
    previous_by_project = _grouped(
        converted.filter(date__gte=previous, date__lt=month), "project"
    )
    ytd_by_project = _grouped(
        converted.filter(date__gte=year_start, date__lt=end), "project"
    )
    runs = _run_reports(projects, budgets, this_month, as_of)
    ytd_plans = _ytd_plans(budgets.values(), year_start, end)

    by_team: dict[int, list[ProjectReport]] = defaultdict(list)
    for summary in summaries:
        project = summary.project
        by_team[project.team_id].append(
            ProjectReport(
                project=project,
                summary=summary,
                month=month_by_project.get(project.pk, Amounts()),
                previous_month=previous_by_project.get(project.pk, Amounts()),
                ytd_plan=ytd_plans.get(project.pk, ZERO),
                ytd=ytd_by_project.get(project.pk, Amounts()),
                runs=runs.get(project.pk, []),
            )
        )
    team_reports = [
        TeamReport(team=team, projects=by_team[team.pk])
        for team in teams.order_by("name")
    ]
    total = Amounts.of(this_month.aggregate(**_sums()))
    unallocated = (
        Amounts.of(this_month.filter(project__isnull=True).aggregate(**_sums()))
        if whole_organisation
        else Amounts()
    )
    allocated = sum(
        (p.month.effective_cost for t in team_reports for p in t.projects), ZERO
    )
    return MonthlyReport(
        month=month,
        currency=settings.REPORTING_CURRENCY,
        as_of=as_of,
        whole_organisation=whole_organisation,
        teams=team_reports,
        total=total,
        provisional=Amounts.of(
            this_month.filter(is_provisional=True).aggregate(**_sums())
        ),
        unallocated=unallocated,
        unconverted=_unconverted(scoped, month, end),
        by_provider=_breakdown(this_month, "provider_name"),
        by_service_category=_breakdown(this_month, "service_category"),
        by_charge_category=_breakdown(this_month, "charge_category"),
        trend=_trend(converted, teams, month),
        reconciliation=Reconciliation(
            records_total=total.effective_cost,
            report_total=allocated + unallocated.effective_cost,
        ),
        sources=list(BillingSource.objects.filter(is_enabled=True).order_by("name"))
        if whole_organisation
        else [],
    )


def _run_reports(
    projects: list[Project],
    budgets: dict[int, Budget],
    this_month: QuerySet[DailyCost],
    as_of: date,
) -> dict[int, list[RunReport]]:
    runs = TrainingRun.objects.filter(project__in=projects).exclude(
        status=TrainingRun.Status.CANCELLED
    )
    month_by_run = _grouped(
        this_month.filter(training_run__isnull=False), "training_run"
    )
    reports: dict[int, list[RunReport]] = defaultdict(list)
    for summary in run_summaries(
        runs=runs.select_related("project").order_by("name"),
        as_of=as_of,
        budgets=budgets,
    ):
        run = summary.run
        measure = (
            budgets[run.project_id].cost_measure
            if run.project_id in budgets
            else DEFAULT_MEASURE
        )
        reports[run.project_id].append(
            RunReport(
                run=run,
                month_actual=month_by_run.get(run.pk, Amounts())[measure],
                summary=summary,
            )
        )
    return reports


def _ytd_plans(
    budgets: Iterable[Budget], year_start: date, end: date
) -> dict[int, Decimal]:
    return {
        budget.project_id: sum(
            (
                line.amount
                for line in budget.lines.all()
                if year_start <= line.month < end
            ),
            ZERO,
        )
        for budget in budgets
    }


def _unconverted(
    scoped: QuerySet[DailyCost], month: date, end: date
) -> dict[str, Decimal]:
    rows = (
        scoped.filter(fx_rate__isnull=True, date__gte=month, date__lt=end)
        .values("billing_currency")
        .annotate(total=Sum("effective_cost"))
        .order_by()
    )
    return {row["billing_currency"]: row["total"] for row in rows}


def _trend(
    converted: QuerySet[DailyCost], teams: QuerySet[Team], month: date
) -> list[TrendMonth]:
    first = month
    for _ in range(TREND_MONTHS - 1):
        first = month_start(first - timedelta(days=1))
    end = next_month(month)
    actual = dict(
        converted.filter(date__gte=first, date__lt=end)
        .annotate(month=TruncMonth("date"))
        .values_list("month")
        .annotate(total=Sum("effective_cost"))
        .order_by()
    )
    plans = dict(
        BudgetLine.objects.filter(
            budget__project__team__in=teams, month__gte=first, month__lt=end
        )
        .values_list("month")
        .annotate(total=Sum("amount"))
        .order_by()
    )
    months = []
    current = first
    while current < end:
        months.append(
            TrendMonth(current, plans.get(current, ZERO), actual.get(current, ZERO))
        )
        current = next_month(current)
    return months
