"""Reads reused by services and views: actual spend from the DailyCost rollup, and the
alerts and plan revisions a user may see."""

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

from django.db.models import Case, Count, Q, QuerySet, Sum, Value, When
from django.db.models.functions import TruncMonth
from django.shortcuts import get_object_or_404

from accounts.models import User
from accounts.permissions import visible_to
from billing.models import COST_COLUMNS, DailyCost, MonthlyCost
from budgets.models import Alert, Budget, BudgetRevision, CostMeasure
from core.currencies import ZERO
from core.dates import next_month
from projects.models import Project
from projects.selectors import project_get_for_user

FIGURE_WINDOW_DAYS = 30


def alerts_visible_to(user: User) -> QuerySet[Alert]:
    """Alerts of the projects a user sees; alerts about billing sources are for the
    finance and admin users who run them."""
    return visible_to(user, Alert.objects.all(), team="project__team")


@dataclass(frozen=True)
class AlertCounts:
    """Active alerts, open (nobody on them yet) and acknowledged apart: every page
    counts them so, as the alert list's Open and Acknowledged tabs do."""

    open: int = 0
    acknowledged: int = 0


def _counted(alerts: QuerySet[Alert]) -> QuerySet[Alert]:
    return alerts.filter(
        status__in=[Alert.Status.OPEN, Alert.Status.ACKNOWLEDGED]
    ).order_by()


def alert_counts(alerts: QuerySet[Alert]) -> AlertCounts:
    totals = _counted(alerts).aggregate(
        open=Count("id", filter=Q(status=Alert.Status.OPEN)),
        acknowledged=Count("id", filter=Q(status=Alert.Status.ACKNOWLEDGED)),
    )
    return AlertCounts(**totals)


def alert_counts_by(alerts: QuerySet[Alert], field: str) -> dict[int, AlertCounts]:
    """The counts per value of `field` (`project`, `project__team`)."""
    rows = (
        _counted(alerts)
        .values_list(field)
        .annotate(
            open=Count("id", filter=Q(status=Alert.Status.OPEN)),
            acknowledged=Count("id", filter=Q(status=Alert.Status.ACKNOWLEDGED)),
        )
    )
    return {key: AlertCounts(open, acknowledged) for key, open, acknowledged in rows}


def alerts_worst_first(alerts: QuerySet[Alert]) -> QuerySet[Alert]:
    """Critical before warning, then the latest first."""
    critical_first = Case(
        When(severity=Alert.Severity.CRITICAL, then=Value(0)), default=Value(1)
    )
    return alerts.order_by(critical_first, "-fired_at", "-id")


def alert_get_for_user(user: User, pk: int) -> Alert:
    return get_object_or_404(
        alerts_visible_to(user).select_related(
            "project__team", "training_run", "source"
        ),
        pk=pk,
    )


def revision_get_for_user(user: User, slug: str, pk: int) -> BudgetRevision:
    project = project_get_for_user(user, slug)
    return get_object_or_404(
        BudgetRevision.objects.select_related(
            "budget__project", "proposed_by", "decided_by"
        ),
        budget__project=project,
        pk=pk,
    )


def converted_daily_costs() -> QuerySet[DailyCost]:
    """Rows in the reporting currency; rows without an FX rate are reported apart."""
    return DailyCost.objects.filter(fx_rate__isnull=False)


def actual_between(
    *,
    measure: str = CostMeasure.EFFECTIVE,
    start: date | None = None,
    end: date | None = None,
    **scope,
) -> Decimal:
    """Sum of one cost measure over dates in [start, end) for a scope such as
    project=..., training_run=... or project__team=...."""
    rows = converted_daily_costs().filter(**scope)
    if start:
        rows = rows.filter(date__gte=start)
    if end:
        rows = rows.filter(date__lt=end)
    return rows.aggregate(total=Sum(measure))["total"] or ZERO


def actual_by_month(*, measure: str, **scope) -> dict[date, Decimal]:
    rows = (
        converted_daily_costs()
        .filter(**scope)
        .annotate(month=TruncMonth("date"))
        .values("month")
        .annotate(total=Sum(measure))
        .order_by("month")
    )
    return {row["month"]: row["total"] for row in rows}


def actual_by_day(
    *, measure: str, start: date, end: date, **scope
) -> dict[date, Decimal]:
    rows = (
        converted_daily_costs()
        .filter(date__gte=start, date__lt=end, **scope)
        .values("date")
        .annotate(total=Sum(measure))
        .order_by("date")
    )
    return {row["date"]: row["total"] for row in rows}


def spend_breakdown(*, measure: str, group_by: str, **scope) -> list[dict]:
    """Totals per provider, service or run, largest first."""
    return list(
        converted_daily_costs()
        .filter(**scope)
        .values(group_by)
        .annotate(total=Sum(measure))
        .order_by("-total")
    )


def provisional_between(*, measure: str, start: date, end: date, **scope) -> Decimal:
    return actual_between(
        measure=measure, start=start, end=end, is_provisional=True, **scope
    )


def unconverted_totals(**scope) -> dict[str, Decimal]:
    """Spend in currencies without an FX rate, by currency: shown, never dropped."""
    rows = (
        DailyCost.objects.filter(fx_rate__isnull=True, **scope)
        .values("billing_currency")
        .annotate(total=Sum("effective_cost"))
        .order_by("billing_currency")
    )
    return {row["billing_currency"]: row["total"] for row in rows}


def _zeros() -> dict[str, Decimal]:
    return dict.fromkeys(COST_COLUMNS, ZERO)


@dataclass
class SpendFigures:
    """What plan vs actual needs of one project or run, in every cost measure."""

    to_date: dict[str, Decimal] = field(default_factory=_zeros)
    month_to_date: dict[str, Decimal] = field(default_factory=_zeros)
    provisional: dict[str, Decimal] = field(default_factory=_zeros)
    gpu_hours: Decimal = ZERO
    daily: dict[date, dict[str, Decimal]] = field(default_factory=dict)

    def day(self, day: date, measure: str) -> Decimal:
        return self.daily.get(day, {}).get(measure, ZERO)

    def between(self, start: date, end: date, measure: str) -> Decimal:
        """Spend over [start, end), for a range inside the daily window."""
        return sum(
            (
                values[measure]
                for day, values in self.daily.items()
                if start <= day < end
            ),
            ZERO,
        )


def spend_figures(
    *,
    scope: str,
    ids: Collection[int],
    as_of: date,
    measures: Collection[str] = COST_COLUMNS,
    days: int = FIGURE_WINDOW_DAYS,
) -> dict[int, SpendFigures]:
    """Spend to date, month to date, provisional, GPU-hours and each of the last
    `days` days, for many projects (scope "project") or runs (scope
    "training_run"): two or three queries, however many there are. Whole months
    come from the monthly rollup (`as_of`'s too when it is the month's last day),
    the days of a month under way from the daily one. Only `measures` are read (each
    figure of another measure stays zero): a page that needs its budgets' measures
    alone reads a quarter of the sums."""
    after = as_of + timedelta(days=1)
    this_month = as_of.replace(day=1)
    whole_month = after == next_month(this_month)
    figures = {pk: SpendFigures() for pk in ids}
    in_scope = {f"{scope}__in": ids}
    # The rows of each query: which are converted, and which are `as_of`'s month
    # (None: none of them).
    sources: list[tuple[QuerySet, Q, Q | None]] = [
        (
            MonthlyCost.objects.filter(**in_scope, month__lt=this_month),
            Q(converted=True),
            None,
        ),
        (
            DailyCost.objects.filter(**in_scope, date__gte=this_month, date__lt=after),
            Q(fx_rate__isnull=False),
            Q(),
        ),
    ]
    if whole_month:
        sources = [
            (
                MonthlyCost.objects.filter(**in_scope, month__lte=this_month),
                Q(converted=True),
                Q(month=this_month),
            )
        ]
    for rows, converted, in_month in sources:
        aggregates = {"gpu_hours": Sum("gpu_hours")}
        for measure in measures:
            aggregates[f"{measure}:to_date"] = Sum(measure, filter=converted)
            aggregates[f"{measure}:provisional"] = Sum(
                measure, filter=converted & Q(is_provisional=True)
            )
            if in_month is not None:
                aggregates[f"{measure}:month"] = Sum(
                    measure, filter=converted & in_month
                )
        for row in rows.values(scope).annotate(**aggregates).order_by():
            found = figures[row[scope]]
            found.gpu_hours += row["gpu_hours"] or ZERO
            for measure in measures:
                found.to_date[measure] += row[f"{measure}:to_date"] or ZERO
                found.provisional[measure] += row[f"{measure}:provisional"] or ZERO
                if in_month is not None:
                    found.month_to_date[measure] = row[f"{measure}:month"] or ZERO
    window = DailyCost.objects.filter(
        **in_scope,
        fx_rate__isnull=False,
        date__gte=as_of - timedelta(days=days - 1),
        date__lt=after,
    )
    daily_rows = (
        window.values(scope, "date")
        .annotate(**{measure: Sum(measure) for measure in measures})
        .order_by()
    )
    for row in daily_rows:
        figures[row[scope]].daily[row["date"]] = {
            measure: row[measure] for measure in measures
        }
    return figures


def months_no_budget_covers(months: Collection[date]) -> list[date]:
    """Those of `months` (first days) that no budget's dates reach, cancelled
    projects' aside: spend charged then is compared with no plan."""
    spans = list(
        Budget.objects.exclude(project__status=Project.Status.CANCELLED).values_list(
            "start_date", "end_date"
        )
    )
    return [
        month
        for month in months
        if not any(start < next_month(month) and end >= month for start, end in spans)
    ]
