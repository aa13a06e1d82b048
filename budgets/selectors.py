"""Reads of actual spend from the DailyCost rollup, reused by services and views."""

from datetime import date
from decimal import Decimal

from django.db.models import QuerySet, Sum
from django.db.models.functions import TruncMonth

from billing.models import DailyCost
from budgets.models import CostMeasure

ZERO = Decimal("0")


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


def gpu_hours_between(
    *, start: date | None = None, end: date | None = None, **scope
) -> Decimal:
    rows = DailyCost.objects.filter(**scope)
    if start:
        rows = rows.filter(date__gte=start)
    if end:
        rows = rows.filter(date__lt=end)
    return rows.aggregate(total=Sum("gpu_hours"))["total"] or ZERO


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
