"""Reads of billing data, scoped to the user by the permission rules."""

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from django.conf import settings
from django.db.models import Q, QuerySet, Sum
from django.shortcuts import get_object_or_404

from accounts.models import User
from accounts.permissions import visible_to
from billing.models import ComputeInvoice, DailyCost, ImportRun
from core.dates import next_month
from projects.models import Project


def invoices_visible_to(user: User) -> QuerySet[ComputeInvoice]:
    return visible_to(user, ComputeInvoice.objects.all(), team="project__team")


def invoice_get_for_user(user: User, pk: int) -> ComputeInvoice:
    return get_object_or_404(
        invoices_visible_to(user).select_related("project", "training_run"), pk=pk
    )


def import_months(run: ImportRun) -> list[date]:
    """The first day of each billing period an import covered."""
    return [date.fromisoformat(f"{period}-01") for period in run.billing_periods]


@dataclass(frozen=True)
class Destination:
    """Where a source's spend of some months went: a project, or None (unallocated),
    with its effective cost in one currency."""

    project: Project | None
    currency: str
    amount: Decimal


def import_destinations(run: ImportRun) -> list[Destination]:
    """Where the source's spend charged in the import's months went, by project and
    unallocated, from the daily rollup (a few rows a day, never the cost lines):
    converted spend in the reporting currency, spend without a rate in its own."""
    months = import_months(run)
    if run.source_id is None or not months:
        return []
    in_months = Q()
    for month in months:
        in_months |= Q(date__gte=month, date__lt=next_month(month))
    groups = (
        DailyCost.objects.filter(in_months, source_id=run.source_id)
        .values("project", "billing_currency", "fx_rate")
        .annotate(amount=Sum("effective_cost"))
        .order_by()
    )
    sums: dict[tuple[int | None, str], Decimal] = {}
    for group in groups:
        converted = group["fx_rate"] is not None
        currency = (
            settings.REPORTING_CURRENCY if converted else group["billing_currency"]
        )
        key = (group["project"], currency)
        sums[key] = sums.get(key, Decimal(0)) + group["amount"]
    projects = Project.objects.in_bulk([pk for pk, _ in sums if pk is not None])
    destinations = [
        Destination(projects.get(pk) if pk else None, currency, amount)
        for (pk, currency), amount in sums.items()
    ]
    return sorted(destinations, key=lambda d: (d.currency, -d.amount))
