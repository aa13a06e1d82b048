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

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.conf import settings
from django.db.models import BooleanField, ExpressionWrapper, Q, QuerySet, Sum
from django.utils import timezone

from accounts.models import Team
from billing.accruals import ACCRUAL_MEASURE, spend_by_provider_and_team
from billing.models import (
    COST_COLUMNS,
    Accrual,
    BillingSource,
    DailyCost,
    MonthlyCost,
)
from billing.reconciliation import (
    CurrencyTotals,
    InvoiceCheck,
    ProjectKey,
    invoice_checks,
)
from budgets.models import Budget, BudgetLine, CostMeasure
from budgets.services import (
    BURN_WINDOW_DAYS,
    DEFAULT_MEASURE,
    ProjectSummary,
    RunSummary,
    plans_by_month,
    project_summaries,
    run_summaries,
)
from core.currencies import ZERO
from core.dates import month_start, next_month
from projects.models import Project, TrainingRun
from reports.checks import (
    MonthFigures,
    month_figures_read,
    records_check_queue,
    rollup_by_project,
    stored_figures,
)
from reports.models import SnapshotFile

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

    def __add__(self, other: "Amounts") -> "Amounts":
        names = (*COST_COLUMNS, "gpu_hours")
        return Amounts(**{name: self[name] + other[name] for name in names})

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


def _difference(report: Decimal, records: Decimal) -> Decimal:
    """report - records; none is a plain 0, never 0E-11 in the JSON."""
    return (report - records) or ZERO


@dataclass(frozen=True)
class CurrencyReconciliation:
    """One billing currency in one measure: the month's cost records against the
    report's projects plus unallocated, in the billing currency, then converted."""

    measure: str
    currency: str
    records: CurrencyTotals
    report: CurrencyTotals

    @property
    def difference(self) -> Decimal:
        return _difference(self.report.amount, self.records.amount)

    @property
    def converted_difference(self) -> Decimal:
        return _difference(self.report.converted, self.records.converted)

    @property
    def unconverted_difference(self) -> Decimal:
        return _difference(self.report.unconverted, self.records.unconverted)

    @property
    def balanced(self) -> bool:
        differences = (self.difference, self.converted_difference)
        return not any((*differences, self.unconverted_difference))

    @property
    def measure_label(self) -> str:
        return MEASURE_LABELS.get(self.measure, self.measure)


@dataclass(frozen=True)
class Reconciliation:
    """Projects plus unallocated against the month's cost records, read from the
    cost records themselves: in total (effective cost converted into the reporting
    currency), per billing currency and measure, and each invoice's billed total
    against the total finance entered. `checked_at` is when the cost records were
    read; while a check of figures that changed since is under way (`checking`,
    queued at `queued_at`), only the report's side is known."""

    records_total: Decimal | None
    report_total: Decimal
    by_currency: list[CurrencyReconciliation] = field(default_factory=list)
    invoices: list[InvoiceCheck] = field(default_factory=list)
    checked_at: datetime | None = None
    queued_at: datetime | None = None

    @property
    def checking(self) -> bool:
        return self.records_total is None

    @property
    def difference(self) -> Decimal | None:
        if self.records_total is None:
            return None
        return _difference(self.report_total, self.records_total)

    @property
    def balanced(self) -> bool | None:
        if self.checking:
            return None
        return not self.difference and all(r.balanced for r in self.by_currency)

    @property
    def flagged_invoices(self) -> list[InvoiceCheck]:
        return [invoice for invoice in self.invoices if invoice.flagged]


@dataclass(frozen=True)
class AccrualRow:
    """One provider and team's spend of the month: provisional (to accrue) and final,
    as of the report; and what finance booked, if the month's accruals are booked."""

    provider: str
    team: Team | None  # None: unallocated
    provisional: Decimal
    final: Decimal
    booked: Accrual | None

    @property
    def accrued(self) -> Decimal | None:
        return self.booked.amount if self.booked else None

    @property
    def invoiced(self) -> bool:
        """Nothing of it is provisional any more: the invoices are in."""
        return not self.provisional

    @property
    def true_up(self) -> Decimal | None:
        """Once invoiced: the final spend less what was final at booking and what was
        accrued; positive when the invoices came in above the accrual."""
        if self.booked is None or not self.invoiced:
            return None
        return self.final - self.booked.final_at_booking - self.booked.amount


@dataclass(frozen=True)
class Accruals:
    """The month's accruals by provider and team, in billed cost."""

    rows: list[AccrualRow]
    booked_at: datetime | None = None

    @property
    def to_accrue(self) -> Decimal:
        return sum((row.provisional for row in self.rows), ZERO)

    @property
    def accrued(self) -> Decimal | None:
        if self.booked_at is None:
            return None
        return sum((row.accrued or ZERO for row in self.rows), ZERO)

    @property
    def true_up(self) -> Decimal | None:
        ups = [row.true_up for row in self.rows if row.true_up is not None]
        return sum(ups, ZERO) if ups else None

    @property
    def measure_label(self) -> str:
        return MEASURE_LABELS.get(ACCRUAL_MEASURE, ACCRUAL_MEASURE)


@dataclass(frozen=True)
class RateUsed:
    """The rates the rollup converted one currency's spend of the month with."""

    currency: str
    days: int
    rates: int  # distinct rates
    first_day: date
    first_rate: Decimal
    last_day: date
    last_rate: Decimal


@dataclass(frozen=True)
class MissingRate:
    """A currency whose spend on these days of the month has no rate."""

    currency: str
    days: list[date]
    amount: Decimal  # effective cost, in the currency

    @property
    def days_text(self) -> str:
        return days_in_words(self.days)


def days_in_words(days: list[date]) -> str:
    """Days as runs: [3, 4, 5, 9 Feb] is "3–5 Feb, 9 Feb"."""
    runs: list[list[date]] = []
    for day in sorted(days):
        if runs and day - runs[-1][-1] == timedelta(days=1):
            runs[-1].append(day)
        else:
            runs.append([day])
    return ", ".join(_run_in_words(run[0], run[-1]) for run in runs)


def _run_in_words(first: date, last: date) -> str:
    if first == last:
        return f"{first:%-d %b}"
    if (first.year, first.month) == (last.year, last.month):
        return f"{first.day}–{last:%-d %b}"
    return f"{first:%-d %b}–{last:%-d %b}"


@dataclass(frozen=True)
class Adjustment:
    """What restatements changed in a closed month since it was closed, for one
    project (`key` its slug), the unallocated spend, or the spend the closed report
    showed on no project row: carried into the next open month's report as its own
    line, never into that month's actual (reports.closing)."""

    month: date  # the closed month
    key: str
    name: str
    team: str  # the team's slug; "" for spend of no team
    billed: Decimal
    effective: Decimal


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
    accruals: Accruals = field(default_factory=lambda: Accruals(rows=[]))
    rates_used: list[RateUsed] = field(default_factory=list)
    missing_rates: list[MissingRate] = field(default_factory=list)
    closed_on: date | None = None  # the day finance closed the month, once closed
    adjustments: list[Adjustment] = field(default_factory=list)

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
    def adjustments_total(self) -> Decimal:
        return sum((row.effective for row in self.adjustments), ZERO)

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
            "reconciliation": _reconciliation_json(self.reconciliation),
            "accruals": _accruals_json(self.accruals),
            "adjustments_to_closed_months": [
                {
                    "month": f"{row.month:%Y-%m}",
                    "slug": row.key,
                    "name": row.name,
                    "team": row.team,
                    "billed": str(row.billed),
                    "effective": str(row.effective),
                }
                for row in self.adjustments
            ],
            "fx": {
                "rates_used": [_rate_used_json(rate) for rate in self.rates_used],
                "missing": [
                    {
                        "currency": missing.currency,
                        "days": [day.isoformat() for day in missing.days],
                        "days_text": missing.days_text,
                        "effective": str(missing.amount),
                    }
                    for missing in self.missing_rates
                ],
            },
        }


def _optional(amount: Decimal | None) -> str | None:
    return None if amount is None else str(amount)


def _reconciliation_json(reconciliation: Reconciliation) -> dict:
    checked_at = reconciliation.checked_at
    return {
        "status": "checking" if reconciliation.checking else "checked",
        "checked_at": checked_at.isoformat() if checked_at else None,
        "records_total": _optional(reconciliation.records_total),
        "report_total": str(reconciliation.report_total),
        "difference": _optional(reconciliation.difference),
        "measure": "effective_cost",
        "balanced": reconciliation.balanced,
        "by_currency": [
            {
                "measure": row.measure,
                "currency": row.currency,
                "records": str(row.records.amount),
                "report": str(row.report.amount),
                "difference": str(row.difference),
                "records_converted": str(row.records.converted),
                "report_converted": str(row.report.converted),
                "converted_difference": str(row.converted_difference),
                "records_unconverted": str(row.records.unconverted),
                "report_unconverted": str(row.report.unconverted),
            }
            for row in reconciliation.by_currency
        ],
        "invoices": [
            {
                "sources": list(check.sources),
                "provider": check.provider,
                "invoice_id": check.invoice_id,
                "currency": check.currency,
                "billed": str(check.billed),
                "entered": _optional(check.entered),
                "difference": _optional(check.difference),
                "flagged": check.flagged,
            }
            for check in reconciliation.invoices
        ],
    }


def _accruals_json(accruals: Accruals) -> dict:
    return {
        "measure": ACCRUAL_MEASURE,
        "booked_at": accruals.booked_at.isoformat() if accruals.booked_at else None,
        "to_accrue": str(accruals.to_accrue),
        "accrued": _optional(accruals.accrued),
        "true_up": _optional(accruals.true_up),
        "rows": [
            {
                "provider": row.provider,
                "team": row.team.slug if row.team else None,
                "provisional": str(row.provisional),
                "final": str(row.final),
                "accrued": _optional(row.accrued),
                "final_at_booking": _optional(
                    row.booked.final_at_booking if row.booked else None
                ),
                "invoiced": row.invoiced,
                "true_up": _optional(row.true_up),
            }
            for row in accruals.rows
        ],
    }


def _rate_used_json(rate: RateUsed) -> dict:
    return {
        "currency": rate.currency,
        "days": rate.days,
        "rates": rate.rates,
        "first": {"date": rate.first_day.isoformat(), "rate": str(rate.first_rate)},
        "last": {"date": rate.last_day.isoformat(), "rate": str(rate.last_rate)},
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


def _grouped(rows: QuerySet[Any], key: str) -> dict:
    return {row[key]: Amounts.of(row) for row in rows.values(key).annotate(**_sums())}


@dataclass(frozen=True)
class MonthSums:
    """A month's converted spend: in all, provisional, unallocated, and by provider,
    service category and charge category."""

    total: Amounts
    provisional: Amounts
    unallocated: Amounts
    by_provider: list[Breakdown]
    by_service_category: list[Breakdown]
    by_charge_category: list[Breakdown]


BREAKDOWNS = ("provider_name", "service_category", "charge_category")


def _month_sums(this_month: QuerySet[DailyCost]) -> MonthSums:
    """Every sum of the month's rows from one query, grouped by the breakdowns'
    dimensions, whether provisional and whether allocated: a few hundred groups,
    added up here, rather than a scan of the month for each figure."""
    allocated = ExpressionWrapper(Q(project__isnull=False), BooleanField())
    groups = [
        (row, Amounts.of(row))
        for row in this_month.annotate(allocated=allocated)
        .values(*BREAKDOWNS, "is_provisional", "allocated")
        .annotate(**_sums())
        .order_by()
    ]
    by_key: dict[str, dict[str, Amounts]] = {key: {} for key in BREAKDOWNS}
    for row, amounts in groups:
        for key, totals in by_key.items():
            name = row[key] or "(none)"
            totals[name] = totals.get(name, Amounts()) + amounts

    return MonthSums(
        total=sum((amounts for _, amounts in groups), Amounts()),
        provisional=sum(
            (amounts for row, amounts in groups if row["is_provisional"]), Amounts()
        ),
        unallocated=sum(
            (amounts for row, amounts in groups if not row["allocated"]), Amounts()
        ),
        by_provider=_largest_first(by_key["provider_name"]),
        by_service_category=_largest_first(by_key["service_category"]),
        by_charge_category=_largest_first(by_key["charge_category"]),
    )


def _largest_first(totals: dict[str, Amounts]) -> list[Breakdown]:
    return sorted(
        (Breakdown(name, amounts) for name, amounts in totals.items()),
        key=lambda row: row.amounts.effective_cost,
        reverse=True,
    )


def report_months(*, teams: QuerySet[Team], whole_organisation: bool) -> list[dict]:
    """Every month with a plan or spend, newest first: spend, plan and provisional."""
    rows = _scoped_months(teams, whole_organisation)
    spend = {
        row["month"]: row
        for row in rows.values("month")
        .annotate(
            effective=Sum("effective_cost"),
            provisional=Sum("effective_cost", filter=Q(is_provisional=True)),
        )
        .order_by()
    }
    plans = plans_by_month(BudgetLine.objects.filter(budget__project__team__in=teams))
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


def _scoped_months(
    teams: QuerySet[Team], whole_organisation: bool
) -> QuerySet[MonthlyCost]:
    """The monthly rollup of the report's scope, in the reporting currency."""
    months = MonthlyCost.objects.filter(converted=True)
    if whole_organisation:
        return months
    return months.filter(project__team__in=teams)


def monthly_report(
    *,
    month: date,
    teams: QuerySet[Team],
    whole_organisation: bool,
    stored_check: bool = False,
) -> MonthlyReport:
    """The report of `month` for `teams`; with `whole_organisation`, also the spend
    no project has (unallocated) and the organisation's totals. Its reconciliation
    reads the month's cost records now, or with `stored_check` (web pages, which
    must answer fast) takes the month's stored check (reports.checks)."""
    month = month_start(month)
    end = next_month(month)
    as_of = min(end - timedelta(days=1), timezone.now().date())
    previous = month_start(month - timedelta(days=1))
    year_start = month.replace(month=1)
    scoped = _scoped(teams, whole_organisation)
    this_month = scoped.filter(fx_rate__isnull=False, date__gte=month, date__lt=end)
    months = _scoped_months(teams, whole_organisation)

    projects = list(
        Project.objects.filter(team__in=teams)
        .exclude(status=Project.Status.CANCELLED)
        .select_related("team", "owner")
        .order_by("team__name", "name")
    )
    summaries = project_summaries(projects=projects, as_of=as_of, days=BURN_WINDOW_DAYS)
    budgets = {s.project.pk: s.budget for s in summaries if s.budget}
    month_by_project = _grouped(months.filter(month=month), "project")
    previous_by_project = _grouped(months.filter(month=previous), "project")
    ytd_by_project = _grouped(
        months.filter(month__gte=year_start, month__lt=end), "project"
    )
    runs = _run_reports(projects, budgets, months.filter(month=month), as_of)
    ytd_plans = _ytd_plans(summaries, year_start, end)

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
    sums = _month_sums(this_month)
    in_report: set[int | None] = {project.pk for project in projects}
    if whole_organisation:
        in_report.add(None)  # the unallocated
    return MonthlyReport(
        month=month,
        currency=settings.REPORTING_CURRENCY,
        as_of=as_of,
        whole_organisation=whole_organisation,
        teams=team_reports,
        total=sums.total,
        provisional=sums.provisional,
        unallocated=sums.unallocated if whole_organisation else Amounts(),
        unconverted=_unconverted(scoped, month, end),
        by_provider=sums.by_provider,
        by_service_category=sums.by_service_category,
        by_charge_category=sums.by_charge_category,
        trend=_trend(months, teams, month),
        reconciliation=_reconciliation(
            month=month,
            in_report=in_report,
            in_scope=None
            if whole_organisation
            else set(
                Project.objects.filter(team__in=teams).values_list("pk", flat=True)
            ),
            invoices=whole_organisation,
            stored_check=stored_check,
        ),
        sources=list(BillingSource.objects.delivering().order_by("name"))
        if whole_organisation
        else [],
        accruals=month_accruals(
            month=month, teams=teams, whole_organisation=whole_organisation
        ),
        rates_used=_rates_used(this_month),
        missing_rates=_missing_rates(scoped.filter(date__gte=month, date__lt=end)),
    )


def _reconciliation(
    *,
    month: date,
    in_report: set[int | None],
    in_scope: set[int | None] | None,
    invoices: bool,
    stored_check: bool,
) -> Reconciliation:
    """The report's projects plus unallocated (`in_report`: project ids, None for
    the unallocated) from the rollup, against the month's cost records of every
    project the report is about (`in_scope`, None: all, with the unallocated), the
    cancelled ones too: a cost the report leaves out shows as a difference."""
    figures: MonthFigures | None
    if stored_check:
        figures = stored_figures(month)
        rollup = rollup_by_project(month)
        if figures is None or figures.rollup != rollup:
            return Reconciliation(
                records_total=None,
                report_total=sum(
                    (
                        row.converted
                        for (measure, _), row in _in_report(rollup, in_report).items()
                        if measure == "effective_cost"
                    ),
                    ZERO,
                ),
                checked_at=figures.checked_at if figures else None,
                queued_at=records_check_queue(month),
            )
    else:
        figures = month_figures_read(month)
    records = _in_report(figures.records, in_scope)
    report = _in_report(figures.rollup, in_report)
    rows = [
        CurrencyReconciliation(
            measure=measure,
            currency=currency,
            records=records.get((measure, currency), CurrencyTotals()),
            report=report.get((measure, currency), CurrencyTotals()),
        )
        for measure, currency in sorted({*records, *report})
    ]
    effective = [row for row in rows if row.measure == "effective_cost"]
    return Reconciliation(
        records_total=sum((row.records.converted for row in effective), ZERO),
        report_total=sum((row.report.converted for row in effective), ZERO),
        by_currency=rows,
        invoices=invoice_checks(month=month, billed=figures.billed) if invoices else [],
        checked_at=figures.checked_at,
    )


def _in_report(
    totals: dict[ProjectKey, CurrencyTotals], projects: set[int | None] | None
) -> dict[tuple[str, str], CurrencyTotals]:
    """The totals of `projects` (None for the unallocated; all when None) by
    measure and currency."""
    added: dict[tuple[str, str], CurrencyTotals] = defaultdict(CurrencyTotals)
    for (measure, currency, project), row in totals.items():
        if projects is None or project in projects:
            total = added[measure, currency]
            total.amount += row.amount
            total.converted += row.converted
            total.unconverted += row.unconverted
    return dict(added)


def month_accruals(
    *, month: date, teams: QuerySet[Team], whole_organisation: bool
) -> Accruals:
    """A month's provisional and final spend by provider and team, as of now, with
    what was accrued: the accruals finance booked or, when none were, those of the
    month's close in force (its JSON snapshot's accrual section: what was then
    provisional). Also for a closed month, whose true-up comes after its close."""
    month = month_start(month)
    spend = spend_by_provider_and_team(
        month=month, teams=None if whole_organisation else teams
    )
    booked = list(Accrual.objects.filter(month=month)) or _accruals_at_close(month)
    visible = None if whole_organisation else set(teams.values_list("pk", flat=True))
    by_key = {
        (a.provider, a.team_id): a
        for a in booked
        if visible is None or a.team_id in visible
    }
    amounts = {(s.provider, s.team_id): (s.provisional, s.final) for s in spend}
    names = {team.pk: team for team in Team.objects.all()}
    rows = [
        AccrualRow(
            provider=provider,
            team=names.get(team_id) if team_id else None,
            provisional=amounts.get((provider, team_id), (ZERO, ZERO))[0],
            final=amounts.get((provider, team_id), (ZERO, ZERO))[1],
            booked=by_key.get((provider, team_id)),
        )
        for provider, team_id in {*amounts, *by_key}
    ]
    rows = [row for row in rows if row.provisional or row.booked]
    rows.sort(key=lambda r: (r.provider, r.team is None, r.team.name if r.team else ""))
    return Accruals(
        rows=rows, booked_at=min((a.booked_at for a in booked), default=None)
    )


def _accruals_at_close(month: date) -> list[Accrual]:
    """The accruals a month was closed with, read from its close's JSON snapshot
    (unsaved Accrual rows): each provider and team's spend then provisional."""
    stored = SnapshotFile.objects.filter(
        close__month=month, close__reopened_at__isnull=True, format="json"
    ).select_related("close")
    snapshot = stored.first()
    if snapshot is None:
        return []
    data = json.loads(bytes(snapshot.content))
    section = data.get("accruals") or {}
    teams = dict(Team.objects.values_list("slug", "pk"))
    accruals = []
    for row in section.get("rows", []):
        was_booked = row["accrued"] is not None
        amount = Decimal(row["accrued"] if was_booked else row["provisional"])
        if not amount or (row["team"] and row["team"] not in teams):
            continue
        accruals.append(
            Accrual(
                month=month,
                provider=row["provider"],
                team_id=teams[row["team"]] if row["team"] else None,
                currency=data["currency"],
                amount=amount,
                final_at_booking=Decimal(
                    row["final_at_booking"] if was_booked else row["final"]
                ),
                booked_at=snapshot.close.closed_at,
                booked_by=snapshot.close.closed_by,
            )
        )
    return accruals


def _rates_used(this_month: QuerySet[DailyCost]) -> list[RateUsed]:
    """Each foreign currency's rates, as the rollup converted with them."""
    days = (
        this_month.exclude(billing_currency=settings.REPORTING_CURRENCY)
        .values_list("billing_currency", "date", "fx_rate")
        .distinct()
        .order_by("billing_currency", "date")
    )
    by_currency: dict[str, list[tuple[date, Decimal]]] = defaultdict(list)
    for currency, day, rate in days:
        if rate is not None:  # `this_month` is converted rows only
            by_currency[currency].append((day, rate))
    return [
        RateUsed(
            currency=currency,
            days=len({day for day, _ in rates}),
            rates=len({rate for _, rate in rates}),
            first_day=rates[0][0],
            first_rate=rates[0][1],
            last_day=rates[-1][0],
            last_rate=rates[-1][1],
        )
        for currency, rates in by_currency.items()
    ]


def _missing_rates(month_rows: QuerySet[DailyCost]) -> list[MissingRate]:
    """Each currency whose spend has no rate on some days of the month: the days."""
    rows = (
        month_rows.filter(fx_rate__isnull=True)
        .values("billing_currency", "date")
        .annotate(amount=Sum("effective_cost"))
        .order_by("billing_currency", "date")
    )
    by_currency: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_currency[row["billing_currency"]].append(dict(row))
    return [
        MissingRate(
            currency=currency,
            days=[row["date"] for row in days],
            amount=sum((row["amount"] for row in days), ZERO),
        )
        for currency, days in by_currency.items()
    ]


def _run_reports(
    projects: list[Project],
    budgets: dict[int, Budget],
    this_month: QuerySet[MonthlyCost],
    as_of: date,
) -> dict[int, list[RunReport]]:
    by_pk = {project.pk: project for project in projects}
    runs = list(
        TrainingRun.objects.filter(project__in=list(by_pk))
        .exclude(status=TrainingRun.Status.CANCELLED)
        .order_by("name")
    )
    for run in runs:
        # The projects are loaded already: not hundreds more of them from a join.
        run.project = by_pk[run.project_id]
    month_by_run = _grouped(
        this_month.filter(training_run__isnull=False), "training_run"
    )
    reports: dict[int, list[RunReport]] = defaultdict(list)
    for summary in run_summaries(runs=runs, as_of=as_of, budgets=budgets):
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
    summaries: Iterable[ProjectSummary], year_start: date, end: date
) -> dict[int, Decimal]:
    """Each project's plan from the year's start, in the reporting currency."""
    return {
        summary.project.pk: sum(
            (
                line.amount
                for line in summary.plan.lines
                if year_start <= line.month < end
            ),
            ZERO,
        )
        for summary in summaries
        if summary.plan
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
    months: QuerySet[MonthlyCost], teams: QuerySet[Team], month: date
) -> list[TrendMonth]:
    first = month
    for _ in range(TREND_MONTHS - 1):
        first = month_start(first - timedelta(days=1))
    end = next_month(month)
    actual = dict(
        months.filter(month__gte=first, month__lt=end)
        .values_list("month")
        .annotate(total=Sum("effective_cost"))
        .order_by()
    )
    plans = plans_by_month(
        BudgetLine.objects.filter(
            budget__project__team__in=teams, month__gte=first, month__lt=end
        )
    )
    trend = []
    current = first
    while current < end:
        trend.append(
            TrendMonth(current, plans.get(current, ZERO), actual.get(current, ZERO))
        )
        current = next_month(current)
    return trend
