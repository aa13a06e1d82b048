"""The reconciliation's heavy half, off the web request.

Reconciling a month reads all of its cost records (10M records over two years: half a
million a month, seconds of database time). A worker does it (`records_check_run`),
after each import of the month and whenever a report finds its check out of date, and
stores the result (`RecordsCheck`): the cost records and the rollup, each by measure,
billing currency and project, read in one snapshot so that they describe the same
data, and the billed total of each invoice of the month's billing period.

A report shows the stored check while the rollup it reads is still the one the check
read; when the rollup has changed since (an import, a reallocation, new FX rates), it
says that the check is under way and queues one. The `monthly_report` command and the
month close read the cost records themselves, so a closed month's snapshot always
holds a reconciliation of its own figures.
"""

from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.db.models import Q, Sum
from django.utils import timezone

from billing.models import DailyCost
from billing.reconciliation import (
    MEASURES,
    Billed,
    CurrencyTotals,
    ProjectKey,
    billed_by_invoice,
    cost_records_by_project,
)
from core.dates import month_start, next_month
from core.tasks import enqueue_after_commit
from reports.models import RecordsCheck

# A check queued this long ago and still not stored is queued again (its worker
# died, or the queue lost it).
REQUEUE_AFTER = timedelta(minutes=5)


@dataclass(frozen=True)
class MonthFigures:
    """A month's cost records and rollup, both by measure, billing currency and
    project (None: the unallocated), and each invoice's billed total."""

    checked_at: datetime
    records: dict[ProjectKey, CurrencyTotals]
    rollup: dict[ProjectKey, CurrencyTotals]
    billed: list[Billed]


def month_figures_read(month: date) -> MonthFigures:
    """Read the month's figures now, in one snapshot of the database."""
    month = month_start(month)
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if outermost and connection.vendor == "postgresql":
            # Both halves see the same data, even while an import commits (inside
            # a caller's transaction, that transaction decides).
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        return MonthFigures(
            checked_at=timezone.now(),
            records=cost_records_by_project(month=month),
            rollup=rollup_by_project(month),
            billed=billed_by_invoice(month),
        )


def rollup_by_project(month: date) -> dict[ProjectKey, CurrencyTotals]:
    """The month's rollup by measure, billing currency and project: before
    conversion, converted, and without a rate."""
    sums: dict[str, Sum] = {}
    for measure in MEASURES:
        before = measure.replace("_cost", "_in_billing_currency")
        sums |= {
            f"{measure}:amount": Sum(before),
            f"{measure}:converted": Sum(measure, filter=Q(fx_rate__isnull=False)),
            f"{measure}:unconverted": Sum(measure, filter=Q(fx_rate__isnull=True)),
        }
    rows = (
        DailyCost.objects.filter(date__gte=month, date__lt=next_month(month))
        .values("billing_currency", "project")
        .annotate(**sums)
        .order_by()
    )
    totals: dict[ProjectKey, CurrencyTotals] = {}
    for group in rows:
        row: dict[str, Any] = dict(group)
        for measure in MEASURES:
            totals[measure, row["billing_currency"], row["project"]] = CurrencyTotals(
                amount=row[f"{measure}:amount"] or Decimal(0),
                converted=row[f"{measure}:converted"] or Decimal(0),
                unconverted=row[f"{measure}:unconverted"] or Decimal(0),
            )
    return totals


def records_check_run(month: date) -> RecordsCheck:
    """Read the month's figures and store them as its check (the worker's task)."""
    figures = month_figures_read(month)
    check, _ = RecordsCheck.objects.update_or_create(
        month=month_start(month),
        defaults={
            "checked_at": figures.checked_at,
            "records": _totals_json(figures.records),
            "rollup": _totals_json(figures.rollup),
            "billed": [
                {**asdict(row), "billed": str(row.billed)} for row in figures.billed
            ],
        },
    )
    # Done, unless another check was asked for after these figures were read.
    RecordsCheck.objects.filter(
        pk=check.pk, requested_at__lte=figures.checked_at
    ).update(requested_at=None)
    return check


def stored_figures(month: date) -> MonthFigures | None:
    """The month's last check, if it was made."""
    check = RecordsCheck.objects.filter(
        month=month_start(month), checked_at__isnull=False
    ).first()
    if check is None or check.checked_at is None:
        return None
    return MonthFigures(
        checked_at=check.checked_at,
        records=_totals_from_json(check.records),
        rollup=_totals_from_json(check.rollup),
        billed=[
            Billed(**{**row, "billed": Decimal(row["billed"])}) for row in check.billed
        ],
    )


def records_check_queue(month: date) -> datetime:
    """Queue a check of the month unless one was queued moments ago; when it was
    (last) queued. One conditional UPDATE decides, so concurrent page views queue
    it once."""
    month = month_start(month)
    now = timezone.now()
    RecordsCheck.objects.get_or_create(month=month)
    due = Q(requested_at__isnull=True) | Q(requested_at__lt=now - REQUEUE_AFTER)
    if RecordsCheck.objects.filter(due, month=month).update(requested_at=now):
        from reports.tasks import records_check_task  # tasks import this module

        enqueue_after_commit(records_check_task, month.isoformat())
        return now
    requested = RecordsCheck.objects.values_list("requested_at", flat=True)
    return requested.get(month=month) or now


def _totals_json(totals: dict[ProjectKey, CurrencyTotals]) -> list[list]:
    return [
        [
            measure,
            currency,
            project,
            str(row.amount),
            str(row.converted),
            str(row.unconverted),
        ]
        for (measure, currency, project), row in sorted(
            totals.items(), key=lambda item: (item[0][0], item[0][1], item[0][2] or 0)
        )
    ]


def _totals_from_json(rows: list[list]) -> dict[ProjectKey, CurrencyTotals]:
    return {
        (measure, currency, project): CurrencyTotals(
            amount=Decimal(amount),
            converted=Decimal(converted),
            unconverted=Decimal(unconverted),
        )
        for measure, currency, project, amount, converted, unconverted in rows
    }
