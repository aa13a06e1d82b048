"""Accruals: spend of a month that is still provisional (no invoice yet), by provider
and team, which finance books as an expense before the invoices arrive; and, once
they arrive, the true-up of what was booked against the final figures.

Amounts are billed cost (what the invoices will say) in the reporting currency, from
the rollup: its converted rows of the month, provisional apart from final. Spend
without an FX rate cannot be accrued in the reporting currency; the report names it.
A month's accruals are booked once, by finance (or when the month is closed), and
kept as booked: `Accrual`, one row per provider and team.
"""

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet, Sum
from django.utils import timezone

from accounts.models import Team, User
from billing.models import Accrual, DailyCost
from core.currencies import ZERO
from core.dates import month_start, next_month

ACCRUAL_MEASURE = "billed_cost"


class AccrualRefused(Exception):
    """Accruals that cannot be booked, with the reason in words."""


@dataclass(frozen=True)
class ProviderTeamSpend:
    provider: str
    team_id: int | None  # None: unallocated
    provisional: Decimal
    final: Decimal


def spend_by_provider_and_team(
    *, month: date, teams: QuerySet[Team] | None = None
) -> list[ProviderTeamSpend]:
    """The month's converted spend, provisional and final, by provider and team: of
    `teams` only when given (then without the unallocated)."""
    rows = DailyCost.objects.filter(
        date__gte=month, date__lt=next_month(month), fx_rate__isnull=False
    )
    if teams is not None:
        rows = rows.filter(project__team__in=teams)
    grouped = (
        rows.values("provider_name", "project__team")
        .annotate(
            provisional=Sum(ACCRUAL_MEASURE, filter=Q(is_provisional=True)),
            final=Sum(ACCRUAL_MEASURE, filter=Q(is_provisional=False)),
        )
        .order_by()
    )
    return [
        ProviderTeamSpend(
            provider=row["provider_name"],
            team_id=row["project__team"],
            provisional=row["provisional"] or ZERO,
            final=row["final"] or ZERO,
        )
        for row in grouped
    ]


def accruals_book(*, month: date, user: User | None) -> list[Accrual]:
    """Book the month's accruals: its provisional spend by provider and team, as of
    now. Once per month: booked accruals stay as they are, for the true-up."""
    month = month_start(month)
    if Accrual.objects.filter(month=month).exists():
        raise AccrualRefused(f"The accruals of {month:%B %Y} are already booked.")
    now = timezone.now()
    accruals = [
        Accrual(
            month=month,
            provider=spend.provider,
            team_id=spend.team_id,
            currency=settings.REPORTING_CURRENCY,
            amount=spend.provisional,
            final_at_booking=spend.final,
            booked_at=now,
            booked_by=user,
        )
        for spend in spend_by_provider_and_team(month=month)
        if spend.provisional
    ]
    if not accruals:
        raise AccrualRefused(f"Nothing in {month:%B %Y} is provisional: no accrual.")
    try:
        with transaction.atomic():
            return Accrual.objects.bulk_create(accruals)
    except IntegrityError:
        # Another booking of the same month won the race: the constraints refuse a
        # second accrual of a month, provider and team.
        raise AccrualRefused(
            f"The accruals of {month:%B %Y} are already booked."
        ) from None
