"""Billing imports, re-allocation of history, and the DailyCost rollup."""

import bisect
import hashlib
import logging
import pickle
import tempfile
import zipfile
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Context, Decimal
from functools import partial
from itertools import chain, islice
from operator import attrgetter
from pathlib import Path
from typing import IO, TYPE_CHECKING

from dateutil.relativedelta import relativedelta
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.files.uploadedfile import UploadedFile
from django.db import (
    DatabaseError,
    IntegrityError,
    OperationalError,
    connection,
    transaction,
)
from django.db.models import (
    BooleanField,
    Count,
    Exists,
    ExpressionWrapper,
    F,
    Max,
    Min,
    Q,
    QuerySet,
    Sum,
)
from django.db.models.fields.files import FieldFile
from django.db.models.functions import Coalesce, TruncDate, TruncMonth
from django.utils import timezone

from billing.allocation import INPUTS, Allocator, rule_candidates
from billing.deliveries import Delivery, delivery_label, delivery_open
from billing.importers import IMPORTERS, ImportFailure, importer_for
from billing.importers.base import Fetcher, Importer, ProviderError
from billing.loader import (
    COST_QUANTUM,
    AccountPeriod,
    LoadStats,
    copy_rows,
    cost_records_load,
    cost_records_load_files,
)
from billing.models import (
    COST_COLUMNS,
    COST_DIGITS,
    GPU_HOUR_UNITS,
    QUANTITY_DIGITS,
    BillingSource,
    CostRecord,
    DailyCost,
    FxRate,
    ImportRun,
    MonthlyCost,
)
from billing.runs import (
    Superseded,
    import_finished_announce,
    import_run_hold,
    upload_enqueue,
)
from billing.sync import fetcher_for
from core import audit
from core.crypto import CredentialsUnreadable, rotated
from core.currencies import ZERO
from core.dates import month_start, next_month
from core.tasks import enqueue_after_commit
from projects.models import AllocationRule, Project

if TYPE_CHECKING:
    from billing.forms import BillingSourceForm  # forms import this module

logger = logging.getLogger(__name__)

# The columns allocation rules read.
ALLOCATION_INPUTS = ["tags", *INPUTS]


def _record_fields(record: CostRecord) -> dict:
    return {name: getattr(record, name) for name in ALLOCATION_INPUTS}


def _allocation_changes(queryset: QuerySet[CostRecord] | None):
    """Each stored record whose allocation the current rules would change, with the
    allocation they would give it."""
    allocator = Allocator()
    records = CostRecord.objects.all() if queryset is None else queryset
    fields = ["pk", "project_id", "training_run_id", "charge_period_start"]
    fields += ["charge_period_end"]
    fields += ["billing_currency", "effective_cost", *ALLOCATION_INPUTS]
    for record in records.only(*fields).iterator(chunk_size=5000):
        allocation = allocator.allocate(_record_fields(record))
        current = (record.project_id, record.training_run_id)
        if current != (allocation.project_id, allocation.training_run_id):
            yield record, allocation


@dataclass(frozen=True)
class AllocationMove:
    """Cost that a rule change would move from one project to another."""

    from_project: str
    to_project: str
    rows: int
    effective: dict[str, Decimal]


def allocation_preview(
    *, queryset: QuerySet[CostRecord] | None = None
) -> list[AllocationMove]:
    """What re-applying the rules would move, largest first; nothing is changed."""
    names = dict(Project.objects.values_list("pk", "name"))
    moves: dict[tuple[int | None, int | None], tuple[int, dict[str, Decimal]]] = {}
    for record, allocation in _allocation_changes(queryset):
        key = (record.project_id, allocation.project_id)
        rows, effective = moves.get(key, (0, {}))
        currency = record.billing_currency
        effective[currency] = effective.get(currency, ZERO) + record.effective_cost
        moves[key] = (rows + 1, effective)
    unallocated = "(unallocated)"
    result = [
        AllocationMove(
            from_project=names.get(old, unallocated) if old else unallocated,
            to_project=names.get(new, unallocated) if new else unallocated,
            rows=rows,
            effective=effective,
        )
        for (old, new), (rows, effective) in moves.items()
    ]
    return sorted(result, key=lambda move: -sum(move.effective.values()))


@transaction.atomic
def cost_records_reallocate(
    *, queryset: QuerySet[CostRecord] | None = None
) -> tuple[date, date] | None:
    """Re-apply the rules to stored records and rebuild the rollup for the dates moved.

    Returns the half-open range of charge dates whose rollup was rebuilt, or None when
    no record changed allocation.
    """
    changed: list[CostRecord] = []
    for record, allocation in _allocation_changes(queryset):
        record.project_id = allocation.project_id
        record.training_run_id = allocation.training_run_id
        changed.append(record)
    if not changed:
        return None
    CostRecord.objects.bulk_update(
        changed, ["project_id", "training_run_id"], batch_size=5000
    )
    audit.record(
        kind=audit.Kind.ALLOCATION_RULE,
        action="re-allocated stored costs",
        details={"records_moved": len(changed)},
    )
    start = min(r.charge_period_start for r in changed).date()
    end = max(_last_moment(r.charge_period_end) for r in changed).date() + ONE_DAY
    daily_costs_rebuild(start=start, end=end)
    return start, end


def unallocated_costs_queue_allocation(*, rule: AllocationRule) -> None:
    """Once the new rule is committed, a worker gives it the stored costs it matches
    that are still unallocated: a scan of history has no place in a web request."""
    from billing.tasks import unallocated_costs_allocate_task  # tasks import this

    enqueue_after_commit(unallocated_costs_allocate_task, rule.pk)


def unallocated_costs_allocate(*, rule_id: int) -> tuple[date, date] | None:
    """Re-apply the rules to the unallocated costs this rule may match: first match
    wins, so an earlier rule keeps what it matches. Safe to run twice: what is
    allocated is no longer unallocated. Returns the dates rebuilt, as
    `cost_records_reallocate` does."""
    rule = AllocationRule.objects.filter(pk=rule_id, is_active=True).first()
    if rule is None:
        return None
    unallocated = CostRecord.objects.filter(project__isnull=True)
    return cost_records_reallocate(queryset=unallocated.filter(rule_candidates(rule)))


class FxTable:
    """Historical rates into the reporting currency: the latest on or before a day."""

    def __init__(self) -> None:
        self.reporting = settings.REPORTING_CURRENCY
        self.dates: dict[str, list[date]] = {}
        self.rates: dict[str, list[Decimal]] = {}
        # The whole table: even a rate a day per currency is only thousands of rows.
        rates = FxRate.objects.order_by("currency", "date")
        for currency, day, rate in rates.values_list("currency", "date", "rate"):
            self.dates.setdefault(currency, []).append(day)
            self.rates.setdefault(currency, []).append(rate)

    def rate(self, currency: str, day: date) -> Decimal | None:
        if currency == self.reporting:
            return Decimal("1")
        index = bisect.bisect_right(self.dates.get(currency, []), day) - 1
        return self.rates[currency][index] if index >= 0 else None


# The first key of every rollup lock; the second is a month. Locks last until the
# transaction ends.
ROLLUP_LOCK_ID = 7_340_001
LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's error when lock_timeout ends a wait


class LockWaitTimeout(ImportFailure):
    """Another import held what this one needed for longer than it waits."""


@contextmanager
def waiting_for(holder: str) -> Iterator[None]:
    """A lock wait that ends (DATABASE_LOCK_WAIT_SECONDS) as an ImportFailure saying
    what held the lock, rather than as "canceling statement due to lock timeout"."""
    try:
        yield
    except OperationalError as exc:
        if getattr(exc.__cause__, "sqlstate", None) != LOCK_NOT_AVAILABLE:
            raise
        waited = settings.DATABASE_LOCK_WAIT_SECONDS
        wait = f"{waited // 60} minutes" if waited % 60 == 0 else f"{waited} seconds"
        raise LockWaitTimeout(
            f"{holder} for longer than this one waits ({wait}); try again once it "
            "has finished"
        ) from exc


def source_lock(source: BillingSource) -> None:
    """One import of a source at a time: a second one waits here. The lock leaves the
    source's key alone, so that the second can record its run meanwhile."""
    with waiting_for(f"another import of {source.name} has been running"):
        BillingSource.objects.select_for_update(no_key=True).get(pk=source.pk)


def rollup_lock(start: date, end: date) -> None:
    """Rebuilds delete then insert: two at once over the same days would count twice.
    PostgreSQL serialises those of the same months with advisory locks, one a month
    taken in order, so that rebuilds of other months go on; SQLite has one writer."""
    if connection.vendor == "postgresql":
        first, last = (
            month.year * 12 + month.month - 1 for month in (start, end - ONE_DAY)
        )
        with connection.cursor() as cursor:
            with waiting_for("another import is rebuilding the costs of these months"):
                cursor.execute(
                    "SELECT pg_advisory_xact_lock(%s, month) "
                    "FROM generate_series(%s, %s) AS month",
                    [ROLLUP_LOCK_ID, first, last],
                )
            # The rollup streams its groups through a server-side cursor, which
            # PostgreSQL plans for the first rows: a sort of every record, on disk.
            # Planned for all rows, with room to hash the groups (tens of thousands,
            # about 60 MB at a million records, a guess of ten times that), it
            # takes a third of the time. Until the transaction ends.
            cursor.execute("SET LOCAL cursor_tuple_fraction = 1")
            cursor.execute(f"SET LOCAL work_mem = '{ROLLUP_WORK_MEM}'")


ROLLUP_WORK_MEM = "256MB"
ONE_DAY = timedelta(days=1)
LONGEST_SPREAD = timedelta(days=92)  # a calendar quarter at most
# What a DailyCost row is per day: the rollup's groups.
ROLLUP_KEY = (
    "project_id",
    "training_run_id",
    "source_id",
    "provider_name",
    "service_name",
    "service_category",
    "charge_category",
    "billing_currency",
    "is_provisional",
)
# The columns the rollup groups and filters CostRecord by.
ROLLUP_INPUTS = ("charge_period_start", "charge_period_end", *ROLLUP_KEY)
# A load this large changes the table enough that the planner's statistics mislead it.
ANALYZE_AFTER_ROWS = 50_000


def _statistics_refresh() -> None:
    """Statistics of the rollup's columns, as the table now is: without them, after a
    large load the planner expects a few rows and sorts a million on disk. Sampled, so
    it takes about as long at any size; PostgreSQL only, SQLite's planner needs none.

    ANALYZE locks the table against another ANALYZE until the import commits, so an
    import of another source that is analysing (or autovacuum) would hold this one
    up for the rest of its transaction: SKIP_LOCKED lets it go on with the statistics
    that one leaves, which only steer plans, never results."""
    if connection.vendor == "postgresql":
        table = CostRecord._meta.db_table
        with connection.cursor() as cursor:
            columns = ", ".join(ROLLUP_INPUTS)
            cursor.execute(f"ANALYZE (SKIP_LOCKED) {table} ({columns})")


@transaction.atomic
def daily_costs_rebuild(*, start: date, end: date) -> int:
    """Rebuild the DailyCost rows of charge dates in [start, end) from CostRecord.

    A charge of a day or less counts on the day it starts. A longer one (a monthly
    fee, an invoice period) is spread over its days in proportion to the time it
    covers, so that a day's spend and burn rate mean what they say; up to a quarter:
    a longer one counts on its first day, so that the charges spread into a range are
    found among those starting at most a quarter before it.
    """
    rollup_lock(start, end)
    within_a_day = counted_on_first_day()
    start_at = datetime.combine(start, datetime.min.time(), tzinfo=UTC)
    # Through the last day of any long charge that starts in the range.
    reach = (
        CostRecord.objects.filter(
            charge_period_start__gte=start_at,
            charge_period_start__lt=datetime.combine(end, time.min, tzinfo=UTC),
        )
        .exclude(within_a_day)
        .aggregate(end=Max("charge_period_end"))["end"]
    )
    if reach:
        end = max(end, _last_moment(reach).date() + ONE_DAY)
    end_at = datetime.combine(end, datetime.min.time(), tzinfo=UTC)
    DailyCost.objects.filter(date__gte=start, date__lt=end).delete()
    gpu_units = Q()
    for unit in GPU_HOUR_UNITS:
        gpu_units |= Q(consumed_unit__iexact=unit)
    groups = (
        CostRecord.objects.filter(within_a_day)
        .annotate(day=TruncDate("charge_period_start", tzinfo=UTC))
        .values("day", *ROLLUP_KEY)
        .annotate(
            **{column: Sum(column) for column in COST_COLUMNS},
            gpu_hours=Sum("consumed_quantity", filter=gpu_units),
            cost_lines=Count("pk"),
        )
        .order_by()
    )
    longer = CostRecord.objects.filter(
        charge_period_start__gte=start_at - LONGEST_SPREAD,
        charge_period_start__lt=end_at,
        charge_period_end__gt=start_at,
    ).exclude(within_a_day)
    spread = _spread_over_days(longer, start_at, end_at)
    spread_days: dict[date, list[tuple]] = {}
    for key in spread:  # a key starts with its day
        spread_days.setdefault(key[0], []).append(key)
    fx = FxTable()
    count = 0
    # Streamed in batches: a large import's rollup has tens of thousands of groups.
    # A week at a time: each day's groups of one currency and project are converted
    # together, so a week's groups (a few thousand) are gathered here. Asked to return
    # them in that order, PostgreSQL sorted every cost record instead of the groups.
    stream = chain.from_iterable(
        _converted(together, fx)
        for week in _weeks(start, end)
        for together in _conversion_sets(
            groups.filter(
                charge_period_start__gte=_midnight(week[0]),
                charge_period_start__lt=_midnight(week[-1] + ONE_DAY),
            ).iterator(ROLLUP_BATCH),
            spread,
            spread_days,
            week,
        )
    )
    while batch := list(islice(stream, ROLLUP_BATCH)):
        _daily_costs_insert(batch)
        count += len(batch)
    _monthly_costs_rebuild(start=start, end=end)
    return count


def _monthly_costs_rebuild(*, start: date, end: date) -> None:
    """Add up again, from DailyCost, every month that [start, end) reaches into."""
    first, stop = month_start(start), next_month(month_start(end - ONE_DAY))
    MonthlyCost.objects.filter(month__gte=first, month__lt=stop).delete()
    months = (
        DailyCost.objects.filter(date__gte=first, date__lt=stop)
        .annotate(
            month=TruncMonth("date"),
            converted=ExpressionWrapper(
                Q(fx_rate__isnull=False), output_field=BooleanField()
            ),
        )
        .values("month", "project_id", "training_run_id", "converted", "is_provisional")
        .annotate(
            **{column: Sum(column) for column in COST_COLUMNS},
            gpu_hours=Sum("gpu_hours"),
            cost_lines=Sum("cost_lines"),
        )
        .order_by()
    )
    MonthlyCost.objects.bulk_create(
        (MonthlyCost(**row) for row in months.iterator(ROLLUP_BATCH)),
        batch_size=ROLLUP_BATCH,
    )


def counted_on_first_day() -> Q:
    """Cost records the rollup counts whole on the day their charge starts: charges
    of a day or less, and those longer than LONGEST_SPREAD. Others are spread over
    their days by `day_shares`."""
    return Q(charge_period_end__lte=F("charge_period_start") + ONE_DAY) | Q(
        charge_period_end__gt=F("charge_period_start") + LONGEST_SPREAD
    )


def _last_moment(end: datetime) -> datetime:
    """The last instant of a half-open period [start, end)."""
    return end - timedelta(microseconds=1)


def _spread_over_days(
    records: QuerySet[CostRecord], start_at: datetime, end_at: datetime
) -> dict[tuple, dict]:
    """Each long charge's share of each day in [start_at, end_at), summed by rollup
    group. Shares are rounded to the stored places and the last day of a charge takes
    the remainder, so a charge's days add up to it exactly."""
    spread: dict[tuple, dict] = {}
    fields = [*ROLLUP_KEY, *COST_COLUMNS, "consumed_quantity", "consumed_unit"]
    for record in records.values(
        *fields, "charge_period_start", "charge_period_end"
    ).iterator():
        gpu_hours = (
            record["consumed_quantity"] or ZERO
            if (record["consumed_unit"] or "").lower() in GPU_HOUR_UNITS
            else ZERO
        )
        amounts = {column: record[column] for column in COST_COLUMNS}
        amounts["gpu_hours"] = gpu_hours
        for day, share in day_shares(
            record["charge_period_start"], record["charge_period_end"], amounts
        ):
            if not start_at.date() <= day < end_at.date():
                continue
            key = (day, *(record[name] for name in ROLLUP_KEY))
            group = spread.setdefault(
                key,
                {"day": day, "cost_lines": 0, **{n: record[n] for n in ROLLUP_KEY}}
                | dict.fromkeys([*COST_COLUMNS, "gpu_hours"], ZERO),
            )
            for name, amount in share.items():
                group[name] += amount
            if day == record["charge_period_start"].astimezone(UTC).date():
                group["cost_lines"] += 1
    return spread


SHARE_PLACES = {
    **dict.fromkeys(COST_COLUMNS, Decimal(1).scaleb(-COST_DIGITS["decimal_places"])),
    "gpu_hours": Decimal(1).scaleb(-QUANTITY_DIGITS["decimal_places"]),
}


def day_shares(
    begins: datetime, ends: datetime, amounts: dict[str, Decimal]
) -> Iterator[tuple[date, dict[str, Decimal]]]:
    """Each day's share of a charge over [begins, ends), in proportion to the time,
    rounded to the stored places; the last day takes the remainder."""
    total_seconds = Decimal((ends - begins).total_seconds())
    given = dict.fromkeys(amounts, ZERO)
    day = begins.astimezone(UTC).date()
    last_day = _last_moment(ends).astimezone(UTC).date()
    while day <= last_day:
        day_start = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
        if day == last_day:
            share = {name: amounts[name] - given[name] for name in amounts}
        else:
            covered = min(ends, day_start + ONE_DAY) - max(begins, day_start)
            fraction = Decimal(covered.total_seconds()) / total_seconds
            share = {
                name: (amount * fraction).quantize(SHARE_PLACES[name])
                for name, amount in amounts.items()
            }
        for name, amount in share.items():
            given[name] += amount
        yield day, share
        day += ONE_DAY


def _with_spread(group: dict, spread: dict[tuple, dict]) -> dict:
    """A day's group of short charges, plus the shares of long charges in it."""
    key = (group["day"], *(group[name] for name in ROLLUP_KEY))
    extra = spread.pop(key, None)
    if extra is None:
        return group
    group["gpu_hours"] = (group["gpu_hours"] or ZERO) + extra["gpu_hours"]
    group["cost_lines"] += extra["cost_lines"]
    for column in COST_COLUMNS:
        group[column] += extra[column]
    return group


ROLLUP_BATCH = 5000
DAILY_COST_FIELDS = [
    f.attname for f in DailyCost._meta.concrete_fields if not f.primary_key
]


def _daily_costs_insert(batch: list[DailyCost]) -> None:
    """On PostgreSQL with COPY: building an INSERT of a large rollup value by value
    took longer than the query that computes it."""
    if connection.vendor == "postgresql":
        values = attrgetter(*DAILY_COST_FIELDS)
        copy_rows(DailyCost, DAILY_COST_FIELDS, map(values, batch))
    else:
        DailyCost.objects.bulk_create(batch)


def _conversion_key(group: dict) -> tuple:
    return group["day"], group["billing_currency"], group["project_id"]


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _weeks(start: date, end: date) -> Iterator[list[date]]:
    """The days of [start, end), seven at a time."""
    days = [start + timedelta(days=n) for n in range((end - start).days)]
    for first in range(0, len(days), 7):
        yield days[first : first + 7]


def _conversion_sets(
    groups: Iterable[dict],
    spread: dict[tuple, dict],
    spread_days: dict[date, list[tuple]],
    days: list[date],
) -> Iterator[list[dict]]:
    """The rollup's groups of `days`, those of each day, currency and project
    together: the groups of short charges with the shares of long charges added,
    and the shares that fall where no short charge does."""
    together: dict[tuple, list[dict]] = {}
    for group in groups:
        merged = _with_spread(group, spread)
        together.setdefault(_conversion_key(merged), []).append(merged)
    for day in days:  # the shares left on these days
        for key in spread_days.pop(day, []):
            if key in spread:
                group = spread.pop(key)
                together.setdefault(_conversion_key(group), []).append(group)
    yield from together.values()


# Enough digits for the exact product of a 30-digit amount and a 20-digit rate.
CONVERSION_CONTEXT = Context(prec=60)
COST_PLACES = Decimal(1).scaleb(-COST_DIGITS["decimal_places"])


def converted_amount(amount: Decimal, rate: Decimal) -> Decimal:
    """An amount times a rate, rounded half up to the places the rollup stores: the
    rollup and the report's reconciliation convert with this one function."""
    product = CONVERSION_CONTEXT.multiply(amount, rate)
    return product.quantize(COST_PLACES, ROUND_HALF_UP, CONVERSION_CONTEXT)


def _converted(groups: list[dict], fx: "FxTable") -> Iterator[DailyCost]:
    """The daily costs of one day, currency and project. Each is converted with the
    day's rate and rounded, and the last takes the remainder, so that together they
    are the day's amount converted and rounded once: what the report's reconciliation
    finds from the cost records. Without a rate, and in the reporting currency (a
    rate of 1, nothing to round), amounts stay as billed."""
    rate = fx.rate(groups[0]["billing_currency"], groups[0]["day"])
    if rate is None or rate == 1:  # no rate, or the reporting currency: as billed
        for group in groups:
            yield _daily_cost(group, rate, {c: group[c] for c in COST_COLUMNS})
        return
    given = dict.fromkeys(COST_COLUMNS, ZERO)
    for group in groups[:-1]:
        amounts = {c: converted_amount(group[c], rate) for c in COST_COLUMNS}
        for column, amount in amounts.items():
            given[column] += amount
        yield _daily_cost(group, rate, amounts)
    totals = {c: sum((group[c] for group in groups), ZERO) for c in COST_COLUMNS}
    yield _daily_cost(
        groups[-1],
        rate,
        {c: converted_amount(totals[c], rate) - given[c] for c in COST_COLUMNS},
    )


def _daily_cost(
    group: dict, rate: Decimal | None, amounts: dict[str, Decimal]
) -> DailyCost:
    return DailyCost(
        date=group["day"],
        project_id=group["project_id"],
        training_run_id=group["training_run_id"],
        source_id=group["source_id"],
        provider_name=group["provider_name"],
        service_name=group["service_name"],
        service_category=group["service_category"],
        charge_category=group["charge_category"],
        billing_currency=group["billing_currency"],
        is_provisional=group["is_provisional"],
        fx_rate=rate,
        gpu_hours=group["gpu_hours"] or ZERO,
        cost_lines=group["cost_lines"],
        billed_in_billing_currency=group["billed_cost"],
        effective_in_billing_currency=group["effective_cost"],
        **amounts,
    )


@dataclass(frozen=True)
class ImportOutcome:
    run: ImportRun

    def as_json(self) -> dict:
        """The JSON object `billing_import --json` prints: a promise to scripts."""
        totals = self.run.totals or {}
        return {
            "status": self.run.status,
            "source": self.run.source_name,
            "rows": self.run.rows_loaded,
            "billing_periods": self.run.billing_periods,
            "billed": totals.get("billed", {}),
            "effective": totals.get("effective", {}),
            "unallocated": totals.get("unallocated", {}),
            "replaced": {
                "rows": self.run.replaced.get("rows", 0),
                "billed": self.run.replaced.get("billed", {}),
                "effective": self.run.replaced.get("effective", {}),
            },
            "warnings": self.run.warnings,
            "error": self.run.error or None,
        }


def billing_import_files(
    *,
    paths: list[Path],
    source_name: str,
    file_format: str = "auto",
    period: date | None = None,
    currency: str = "",
    allow_overlap: bool = False,
) -> ImportOutcome:
    """Import one delivery (files, folders, zips) for a source, replacing that
    source's rows for every billing period in it, in one transaction. The same
    delivery twice changes nothing and says so; any bad input leaves the database as
    it was, and a source the import was to create is not created."""
    run = ImportRun.objects.create(
        source=BillingSource.objects.filter(name=source_name).first(),
        source_name=source_name,
        file_name=delivery_label([_given_name(path) for path in paths]),
        file_format=file_format,
        period=period,
        currency=currency,
        allow_overlap=allow_overlap,
    )
    return import_run_execute(run=run, paths=paths)


def billing_import_file(*, path: Path, source_name: str, **options) -> ImportOutcome:
    """A delivery of one file: billing_import_files' most common case."""
    return billing_import_files(paths=[path], source_name=source_name, **options)


def _given_name(path: Path) -> str:
    return f"{path.name}/" if path.is_dir() else path.name


@dataclass(frozen=True)
class NewSource:
    """A source an upload creates on purpose: its name and kind."""

    name: str
    kind: str


def billing_upload_accept(
    *,
    uploaded: list[UploadedFile],
    source: BillingSource | NewSource,
    file_format: str = "auto",
    period: date | None = None,
    currency: str = "",
    allow_overlap: bool = False,
) -> ImportRun:
    """Keep an uploaded delivery (several files: as a zip of them) with a new
    ImportRun for an existing source, or for a new one created now, and queue its
    import: once the request's transaction commits, `run.status` says whether the
    queue took it (running) or it waits (queued). A new source is created on purpose,
    so it stays when its first import fails (finance may delete a source that holds
    no data)."""
    if isinstance(source, NewSource):
        source = _upload_source_create(source)
        audit.record(
            kind=audit.Kind.SOURCE, action="created by an upload", target=source
        )
    elif not _source_hold(source):
        raise ValidationError(
            f"“{source.name}” no longer exists: choose another source."
        )
    names = [file.name or "" for file in uploaded]
    run = ImportRun.objects.create(
        source=source,
        source_name=source.name,
        file_name=delivery_label(names),
        upload_name=names[0] if len(names) == 1 else "",
        file_format=file_format,
        period=period,
        currency=currency,
        allow_overlap=allow_overlap,
        origin=ImportRun.Origin.UPLOAD,
    )
    _upload_keep(run, uploaded)
    audit.record(
        kind=audit.Kind.IMPORT, action="uploaded", target=run, details={"files": names}
    )
    # With the queue down, the run is left `queued` for the sweep (and says so).
    transaction.on_commit(lambda: upload_enqueue(run))
    return run


def _source_hold(source: BillingSource) -> bool:
    """Keep the source from being deleted until this transaction commits; False when
    it is gone already. PostgreSQL's FOR KEY SHARE: a deletion (FOR UPDATE) waits for
    this upload, then sees its run, while an import's lock (FOR NO KEY UPDATE) is no
    obstacle, so an upload never waits for an import."""
    if connection.vendor != "postgresql":  # SQLite: one writer at a time anyway
        return BillingSource.objects.filter(pk=source.pk).exists()
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT 1 FROM {BillingSource._meta.db_table} WHERE id = %s FOR KEY SHARE",
            [source.pk],
        )
        return cursor.fetchone() is not None


def _upload_source_create(new: NewSource) -> BillingSource:
    """A source named unlike any other, ignoring case: "AWS" and "aws" would be
    two sources of the same bills."""
    taken = BillingSource.objects.filter(name__iexact=new.name).first()
    if taken is not None:
        raise ValidationError(_taken(taken.name))
    if new.kind not in IMPORTERS:
        raise ValidationError(f"{new.kind!r} sources cannot be uploaded.")
    try:
        with transaction.atomic():
            return BillingSource.objects.create(name=new.name, kind=new.kind)
    except IntegrityError as exc:  # created meanwhile by another upload
        raise ValidationError(_taken(new.name)) from exc


def _taken(name: str) -> str:
    return f"A source named “{name}” exists already: choose it from the list."


UPLOADED_DELIVERY = "delivery.zip"


def _upload_keep(run: ImportRun, uploaded: list[UploadedFile]) -> None:
    """One file as it came; several as one zip of them, stored uncompressed (exports
    compress themselves, or are read faster so), which imports as a delivery."""
    if len(uploaded) == 1:
        run.upload.save(uploaded[0].name or UPLOADED_DELIVERY, uploaded[0])
        return
    names = [file.name or "" for file in uploaded]
    if len(set(names)) != len(names):
        raise ValueError("two uploaded files have the same name")
    with tempfile.TemporaryFile() as spool:
        with zipfile.ZipFile(spool, "w", zipfile.ZIP_STORED) as archive:
            for name, file in zip(names, uploaded, strict=True):
                with archive.open(name, "w", force_zip64=True) as member:
                    for chunk in file.chunks():
                        member.write(chunk)
        run.upload.save(UPLOADED_DELIVERY, File(spool))


def import_run_execute(
    *, run: ImportRun, paths: list[Path], names: list[str] | None = None
) -> ImportOutcome:
    """Run the import that `run` stands for: the delivery to the database, or a
    failure. The source is created in the import's transaction, when it is new, so
    that a failed import leaves no source behind. `names`: what each path is called
    by the person importing (delivery_open), e.g. an upload's own file name."""
    source_before = run.source
    try:
        with delivery_open(paths, names=names) as delivery:
            run.files, run.checksum = delivery.as_json(), delivery.checksum
            run.save(update_fields=["files", "checksum"])
            importer = _delivery_importer(delivery, run)
            with transaction.atomic():
                import_run_hold(run)
                _load_delivery(run, importer, delivery)
    except Superseded:
        run.refresh_from_db()  # another attempt, or the sweep, has it: leave it be
    except ImportFailure as failure:
        _fail(run, source_before, failure)
    except (ValueError, ArithmeticError) as exc:
        _fail(run, source_before, f"{run.file_name}: {exc}")
    except DatabaseError as exc:
        _fail(run, source_before, _unexplained(run, run.file_name, exc))
    except Exception as exc:
        # A bug, not bad data: record it on the run, then let it surface.
        _fail(run, source_before, _unexplained(run, run.file_name, exc))
        raise
    return ImportOutcome(run)


def _load_delivery(run: ImportRun, importer: Importer, delivery: Delivery) -> None:
    # An upload names its source by id (renamed since, it is still that source); a
    # command-line import by name, creating it: behind another import creating the
    # same source, it waits for that one's commit (the name is unique).
    source = run.source
    if source is None:
        with waiting_for(f"another import of {run.source_name} has been running"):
            source, _ = BillingSource.objects.get_or_create(
                name=run.source_name, defaults={"kind": importer.name}
            )
    if source.kind != importer.name:
        # Importing into another kind's source would replace its data with
        # unrelated rows.
        found = (
            f"is {_kind_named(importer.name)}"
            if run.file_format == "auto"
            else f"was declared as {run.file_format}"
        )
        raise ImportFailure(
            f"{found}, but source {source.name!r} takes "
            f"{BillingSource.Kind(source.kind).label} files: import it into another "
            "source",
            file=delivery.files[0].name,
        )
    source_lock(source)
    run.source = source
    run.save(update_fields=["source"])
    previous = _same_file_still_loaded(source, run.checksum, before=run)
    if previous:
        _finish(run, ImportRun.Status.UNCHANGED, previous=previous)
        return
    if not run.allow_overlap:
        _refuse_files_held_elsewhere(run)
    _replace_periods(
        source,
        run,
        partial(cost_records_load_files, importer, delivery.paths),
        periods=[_period_start(run.period)] if run.period else (),
        loaded=partial(_loaded_check, source, run, importer),
    )


def _loaded_check(
    source: BillingSource, run: ImportRun, importer: Importer, stats: LoadStats
) -> None:
    """What an import learns once its rows are in: the importer's warnings, and
    whether another source holds the same accounts and periods."""
    found = [str(warning) for warning in getattr(importer, "warnings", [])]
    run.warnings = [*run.warnings, *found]
    if not run.allow_overlap:
        _refuse_accounts_held_elsewhere(source, run, stats)


def _period_start(period: date) -> datetime:
    return datetime.combine(period.replace(day=1), time.min, tzinfo=UTC)


def _delivery_importer(delivery: Delivery, run: ImportRun) -> Importer:
    """The importer of every file of the delivery; files of another format than the
    first are refused."""
    currency = run.currency or None
    first, *others = delivery.files
    importer = importer_for(first.path, run.file_format, currency=currency)
    for file in others:
        kind = importer_for(file.path, run.file_format, currency=currency).name
        if kind != importer.name:
            raise ImportFailure(
                f"is {_kind_named(kind)}, but {first.name} is "
                f"{_kind_named(importer.name)}: the files of a delivery must all be "
                "of one format",
                file=file.name,
            )
    return importer


def _kind_named(kind: str) -> str:
    """A kind of billing file as a sentence names it: "an Azure cost details file"."""
    label = BillingSource.Kind(kind).label
    return f"{'an' if label[0] in 'AEIOU' else 'a'} {label} file"


# Messages name a setting as a person knows it, never a command-line flag: the
# portal shows them (its form and billing_import's options carry the same names).
OVERLAP_HINT = (
    "importing it here too would count it twice; to import it anyway, allow the "
    "overlap (import even if another source holds the same data)"
)


def _refuse_files_held_elsewhere(run: ImportRun) -> None:
    """Refuse a file whose very data another source still holds."""
    names = {file["sha256"]: file["name"] for file in run.files}
    others = (
        ImportRun.objects.filter(status=ImportRun.Status.IMPORTED, source__isnull=False)
        # Imports of files (syncs list none), and those from before files were kept.
        .filter(Q(checksum__in=names) | ~Q(files=[]))
        .exclude(source=run.source)
        .select_related("source")
        .order_by("-started_at", "-pk")
    )
    for other in others.iterator():
        theirs = {other.checksum, *(file["sha256"] for file in other.files)}
        shared = sorted(names[digest] for digest in names.keys() & theirs)
        if shared and _still_held(other):
            raise ImportFailure(
                f"is already imported into the source {str(other.source)!r} "
                f"({other.started_at:%-d %b %Y %H:%M} UTC): {OVERLAP_HINT}",
                file=shared[0],
            )


def _refuse_accounts_held_elsewhere(
    source: BillingSource, run: ImportRun, stats: LoadStats
) -> None:
    """Refuse rows of a billing account and period that another source holds."""
    wanted: dict[datetime, set[str]] = {}
    for period, account, _ in stats.account_periods:
        wanted.setdefault(period, set()).add(account)
    if not wanted:
        return
    held = Q()
    for period, accounts in wanted.items():
        held |= Q(billing_period_start=period, billing_account_id__in=accounts)
    for other in BillingSource.objects.exclude(pk=source.pk).order_by("name"):
        # One source at a time: each such query is a range of its period index.
        found = (
            CostRecord.objects.filter(held, source=other)
            .values_list("billing_account_id", "billing_period_start")
            .first()
        )
        if found:
            account, period = found
            raise ImportFailure(
                f"billing account {account} for {period:%Y-%m} is already held by "
                f"the source {other.name!r}: {OVERLAP_HINT}",
                file=run.file_name,
            )


def import_progress(run: ImportRun) -> int:
    """Rows loaded so far by a running import (the worker reports them); 0 when the
    cache cannot say (Redis down): progress is best effort, never an error."""
    try:
        return cache.get(_progress_key(run.pk), 0)
    except Exception:
        logger.warning("import run %s: the cache is down, no progress", run.pk)
        return 0


def _progress_reporter(run_id: int) -> Callable[[int], None]:
    """What the loader calls with its row count. Best effort: it runs inside the
    import's transaction, which a cache outage must not break; after the first
    failure it stops trying, so an unreachable cache costs one timeout."""
    working = True

    def report(count: int) -> None:
        nonlocal working
        if not working:
            return
        try:
            cache.set(_progress_key(run_id), count, 60 * 60)
        except Exception:
            working = False
            logger.warning("import run %s: the cache is down, no progress", run_id)

    return report


def _progress_key(run_id: int) -> str:
    return f"import-progress:{run_id}"


class _Unchanged(Exception):
    """Raised inside the import transaction to roll back a reload of identical data."""

    def __init__(self, previous: ImportRun | None) -> None:
        self.previous = previous


class SourceHoldsData(Exception):
    """A source that holds data, or is being imported into, is never deleted."""


def source_delete_refusal(source: BillingSource) -> str | None:
    """Why the source may not be deleted, in a sentence, or None when it holds no
    data. Its history of failed imports goes with it."""
    name = f"“{source.name}”"
    if CostRecord.objects.filter(source=source).exists():
        return f"{name} holds cost data, which reports and budgets count."
    loaded = source.import_runs.filter(
        status__in=[ImportRun.Status.IMPORTED, ImportRun.Status.UNCHANGED]
    ).count()
    if loaded:
        return (
            f"{name} has {loaded:,} import{'s' if loaded != 1 else ''} that loaded "
            "data, whose history is kept."
        )
    if source.import_runs.filter(
        status__in=[ImportRun.Status.QUEUED, ImportRun.Status.RUNNING]
    ).exists():
        return f"An import into {name} is waiting or under way."
    if source.provider_invoices.exists():
        return f"Provider invoices are reconciled against {name}."
    return None


@transaction.atomic
def billing_source_save(*, form: "BillingSourceForm") -> BillingSource:
    """Save a source an admin added or changed in the portal (the form checks the
    endpoint and keeps the credentials write-only), audited with the names of the
    fields changed, never their values."""
    adding = form.instance.pk is None
    source = form.save()
    audit.record(
        kind=audit.Kind.SOURCE,
        action="added in the portal" if adding else "changed in the portal",
        target=source,
        details={"changed": form.changed_data},
    )
    return source


@transaction.atomic
def billing_source_delete(*, source: BillingSource) -> None:
    """Delete a source that holds no data, with its failed imports and their kept
    uploads; refuse one that does (SourceHoldsData says why). The source's row is
    locked first, so an import that is loading into it is waited for, then seen."""
    with waiting_for(f"an import of {source.name} has been running"):
        BillingSource.objects.select_for_update().get(pk=source.pk)
    refusal = source_delete_refusal(source)
    if refusal:
        raise SourceHoldsData(refusal)
    uploads = [run.upload for run in source.import_runs.exclude(upload="")]
    audit.record(kind=audit.Kind.SOURCE, action="deleted", target=source)
    source.delete()
    transaction.on_commit(partial(_uploads_delete, uploads))


def _uploads_delete(uploads: list[FieldFile]) -> None:
    for upload in uploads:
        upload.delete(save=False)


@transaction.atomic
def credentials_rotate() -> list[str]:
    """Encrypt every source's stored credentials again with the first of the
    FIELD_ENCRYPTION_KEY keys, so that the others can be removed. The names of the
    sources rotated; all or none."""
    sources = BillingSource.objects.select_for_update().exclude(credentials_token="")
    for source in sources:
        source.credentials_token = rotated(source.credentials_token)
        source.save(update_fields=["credentials_token"])
    return [source.name for source in sources]


def sync_since() -> datetime:
    """Where a sync (and a connection test) starts: the previous month's first day."""
    return month_start(timezone.now()) - relativedelta(months=1)


def billing_sync_source(*, source_id: int, attempt: int = 1) -> ImportOutcome:
    """Fetch a source's open and previous billing periods from its provider and load
    them like a file import. The provider is read before the import's transaction
    opens, into a temporary file, so a slow provider does not hold the source's lock.
    Provider outages raise ProviderError, for a retry later; identical data reports
    `unchanged` and leaves the database as it was. `attempt` counts the syncs the
    sweep queued again after their worker stopped."""
    source = BillingSource.objects.get(pk=source_id)
    fetcher = fetcher_for(source)
    if fetcher is None:
        raise ImportFailure(
            f"{source.name} is a {source.get_kind_display()} source: import its "
            "files with billing_import"
        )
    since = sync_since()
    run = ImportRun.objects.create(
        source=source,
        source_name=source.name,
        file_name=f"{source.kind} API",
        origin=ImportRun.Origin.SYNC,
        attempts=attempt,
    )
    digest = RowsFingerprint()
    try:
        fetched = fetcher.fetch(source=source, since=since)
        # Read to the end before the transaction opens: spooled() enters first.
        with spooled(digest.passing(fetched)) as rows, transaction.atomic():
            source_lock(source)
            import_run_hold(run)
            _load_fetched(source, run, fetcher, rows, since)
            run.checksum = digest.hexdigest()
            run.save(update_fields=["checksum"])
            previous = _same_data_loaded(run)
            if previous:
                raise _Unchanged(previous)
    except Superseded:
        run.refresh_from_db()  # the sweep found it stopped and queued another sync
    except _Unchanged as unchanged:
        run.refresh_from_db()
        run.checksum = digest.hexdigest()
        _finish(run, ImportRun.Status.UNCHANGED, previous=unchanged.previous)
    except ImportFailure as failure:
        _fail(run, source, failure)
    except CredentialsUnreadable as exc:
        _fail(run, source, f"{source.name}: {exc} Enter its credentials again.")
    except (ValueError, ArithmeticError) as exc:
        _fail(run, source, f"{source.name}: {exc}")
    except DatabaseError as exc:
        _fail(run, source, _unexplained(run, source.name, exc))
    except ProviderError as exc:
        _fail(run, source, f"{source.name}: the provider failed: {exc}")
        raise
    except Exception as exc:
        # A bug, not bad data: record it on the run, then let it surface.
        _fail(run, source, _unexplained(run, source.name, exc))
        raise
    return ImportOutcome(run)


def _load_fetched(
    source: BillingSource,
    run: ImportRun,
    fetcher: Fetcher,
    rows: Iterator[dict],
    since: datetime,
) -> None:
    # A fetcher may skip the periods it knows to be unchanged: it then names, by the
    # time fetch() returns, those it restates; the others keep their rows, and when
    # it restates none, nothing changed.
    window = {since, month_start(timezone.now())}
    periods = getattr(fetcher, "covered_periods", window)
    if not periods:
        raise _Unchanged(_latest_import(run))
    # What a fetcher keeps of this sync (the S3 fetcher's ETags) is written here, in
    # the import's transaction: a failed import records nothing.
    remember = getattr(fetcher, "remember", None)
    if remember:
        remember(source)

    def warnings(stats: LoadStats) -> None:
        run.warnings = [str(warning) for warning in getattr(fetcher, "warnings", [])]

    _replace_periods(
        source,
        run,
        partial(cost_records_load, rows),
        periods=sorted(periods),
        loaded=warnings,
    )


@contextmanager
def spooled(rows: Iterable[dict]) -> Iterator[Iterator[dict]]:
    """The rows, read to the end into a temporary file (pickled a block at a time),
    and given back from it: what a provider sent, held on disk while the import
    waits for its lock. Memory holds one block of rows at a time."""
    with tempfile.TemporaryFile(prefix="spendtracker-fetch-") as spool:
        rows = iter(rows)
        while block := list(islice(rows, SPOOL_BLOCK_ROWS)):
            pickle.dump(block, spool, protocol=pickle.HIGHEST_PROTOCOL)
        spool.seek(0)
        yield _unpickled(spool)


SPOOL_BLOCK_ROWS = 1000


def _unpickled(spool: IO[bytes]) -> Iterator[dict]:
    while True:
        try:
            block = pickle.load(spool)  # our own file, written just before
        except EOFError:
            return
        yield from block


class RowsFingerprint:
    """A checksum of a set of rows that does not depend on their order (a provider
    may return the same rows in any order): the sum of the rows' own digests."""

    MODULUS = 2**256

    def __init__(self) -> None:
        self.total = 0

    def passing(self, rows):
        for row in rows:
            digest = hashlib.sha256(repr(sorted(row.items())).encode()).digest()
            self.total = (self.total + int.from_bytes(digest)) % self.MODULUS
            yield row

    def hexdigest(self) -> str:
        return f"{self.total:064x}"


# When an import's data went in: a source's imports load one at a time under its lock,
# each finishing before it commits, but not in the order they started (an upload may
# wait queued, or be redelivered, for hours).
LOADED_AT = Coalesce("finished_at", "started_at")


def _latest_import(run: ImportRun) -> ImportRun | None:
    """The source's latest import before `run`: the last to have loaded."""
    return (
        ImportRun.objects.filter(
            source_id=run.source_id, status=ImportRun.Status.IMPORTED
        )
        .exclude(pk=run.pk)
        .order_by(LOADED_AT.desc(), "-pk")
        .first()
    )


def _same_data_loaded(run: ImportRun) -> ImportRun | None:
    latest = _latest_import(run)
    same = latest and (latest.checksum, latest.billing_periods) == (
        run.checksum,
        run.billing_periods,
    )
    return latest if same else None


def _replace_periods(
    source: BillingSource,
    run: ImportRun,
    load: Callable[..., LoadStats],
    *,
    periods: Collection[datetime] = (),
    loaded: Callable[[LoadStats], None] = lambda stats: None,
) -> None:
    """Load rows with `load` (cost_records_load or cost_records_load_files, given all
    but the ids, time and progress) and drop the source's older rows of every billing
    period they fall in, plus `periods`: a period the source no longer reports is
    emptied. Without `periods`, rows are required (a header only is a mistake).
    `loaded` is told what was loaded before anything is deleted, and may refuse it.
    The run records what was removed, and warns of rows removed of an account and
    period (and sub-account) that the new rows do not restate."""
    started = timezone.now()
    stats = load(
        source_id=source.pk,
        import_run_id=run.pk,
        now=started,
        progress=_progress_reporter(run.pk),
    )
    if not stats.rows and not periods:
        raise ImportFailure(
            "has a header but no cost rows; if it is a month without charges, give "
            "its billing month",
            file=run.file_name,
        )
    loaded(stats)
    restated = stats.billing_periods | set(periods)
    removed = _cost_records_delete(
        CostRecord.objects.filter(
            source=source, billing_period_start__in=restated
        ).exclude(import_run=run)
    )
    if stats.rows >= ANALYZE_AFTER_ROWS:
        _statistics_refresh()
    touched = list(filter(None, [stats.first_charge, removed.first]))
    if removed.last_end:
        touched.append(_last_moment(removed.last_end))
    touched += filter(None, [stats.last_charge])
    if touched:
        daily_costs_rebuild(
            start=min(touched).date(), end=max(touched).date() + timedelta(days=1)
        )
    run.rows_read = run.rows_loaded = stats.rows
    run.billing_periods = sorted(f"{p:%Y-%m}" for p in restated)
    run.totals = {
        "billed": _strings(stats.billed),
        "effective": _strings(stats.effective),
        "unallocated": _strings(stats.unallocated),
    }
    run.replaced = removed.as_json()
    run.warnings = [*run.warnings, *removed.warnings(kept=stats.account_periods)]
    _finish(run, ImportRun.Status.IMPORTED)
    closed = [p for p in restated if p < month_start(started)]
    if closed:
        complete = max(closed) + relativedelta(months=1)
        if not source.data_complete_through or complete > source.data_complete_through:
            source.data_complete_through = complete
            source.save(update_fields=["data_complete_through"])
    transaction.on_commit(lambda: import_finished_announce(run))


@dataclass(frozen=True)
class RemovedGroup:
    """Rows an import removed, of one period, account, sub-account and currency."""

    period: datetime
    account: str
    sub_account: str
    currency: str
    rows: int
    billed: Decimal
    effective: Decimal


@dataclass(frozen=True)
class Removed:
    """What an import removed, and the span of charges it covered (the first start
    and the last end), which the rollup rebuilds."""

    groups: list[RemovedGroup]
    first: datetime | None
    last_end: datetime | None

    def as_json(self) -> dict:
        return {
            "rows": sum(group.rows for group in self.groups),
            "billed": _totals(self.groups, "billed"),
            "effective": _totals(self.groups, "effective"),
        }

    def warnings(self, *, kept: set[AccountPeriod]) -> list[str]:
        """A warning, in money, for each account and period whose rows (of some or
        all of its sub-accounts) were removed and not restated by the new rows."""
        accounts = {(period, account) for period, account, _ in kept}
        lost: dict[tuple[datetime, str], list[RemovedGroup]] = {}
        for group in self.groups:
            if (group.period, group.account, group.sub_account) not in kept:
                lost.setdefault((group.period, group.account), []).append(group)
        return [
            _lost_warning(
                period, account, groups, whole=(period, account) not in accounts
            )
            for (period, account), groups in sorted(lost.items())
        ]


def _lost_warning(
    period: datetime, account: str, groups: list[RemovedGroup], *, whole: bool
) -> str:
    rows = sum(group.rows for group in groups)
    if whole:
        what = "the account is not in this import"
    else:
        subs = sorted({group.sub_account or "(none)" for group in groups})
        more = len(subs) - SUB_ACCOUNTS_SHOWN
        what = "sub-accounts not in this import: " + ", ".join(
            subs[:SUB_ACCOUNTS_SHOWN]
        )
        what += f" and {more} more" if more > 0 else ""
    money = [
        f"{measure} {amount} {currency}"
        for measure in ("billed", "effective")
        for currency, amount in _totals(groups, measure).items()
    ]
    return (
        f"removed {rows:,} row{'s' if rows != 1 else ''} of billing account "
        f"{account or '(none)'} for {period:%Y-%m} that this import does not "
        f"replace ({what}): {', '.join(money)}"
    )


SUB_ACCOUNTS_SHOWN = 5


def _totals(groups: Iterable[RemovedGroup], measure: str) -> dict[str, str]:
    sums: dict[str, Decimal] = {}
    for group in groups:
        sums[group.currency] = sums.get(group.currency, ZERO) + getattr(group, measure)
    return _strings(sums)


REMOVED_KEY = ("billing_period_start", "billing_account_id", "sub_account_id")


def _cost_records_delete(records: QuerySet[CostRecord]) -> Removed:
    """Delete cost records and return what they were, by account, period and
    currency, with the span they covered (a charge longer than a day counts on every
    day it covered). On PostgreSQL in one pass over the rows, a DELETE whose returned
    rows the server sums up; at a million rows a second pass took about a second.
    Nothing refers to cost records: there is nothing to cascade."""
    key = [*REMOVED_KEY, "billing_currency"]
    if connection.vendor != "postgresql":
        found = list(
            records.values_list(*key)
            .annotate(
                Count("pk"),
                Sum("billed_cost"),
                Sum("effective_cost"),
                Min("charge_period_start"),
                Max("charge_period_end"),
            )
            .order_by()
        )
        records.delete()
    else:
        query = records.query
        where, params = query.get_compiler(connection=connection).compile(query.where)
        table = connection.ops.quote_name(CostRecord._meta.db_table)
        columns = ", ".join(key)
        with connection.cursor() as cursor:
            # The deleted rows are held for the sums: with the default work_mem they
            # spill to disk, which took half as long again as the DELETE (300,000
            # rows); the rollup that follows sets the same for the transaction.
            cursor.execute(f"SET LOCAL work_mem = '{ROLLUP_WORK_MEM}'")
            cursor.execute(
                f"WITH gone AS (DELETE FROM {table} WHERE {where} RETURNING {columns}, "
                "billed_cost, effective_cost, charge_period_start, charge_period_end) "
                f"SELECT {columns}, count(*), sum(billed_cost), sum(effective_cost), "
                "min(charge_period_start), max(charge_period_end) "
                f"FROM gone GROUP BY {columns}",
                params,
            )
            found = cursor.fetchall()
    # As stored: SQLite's sums carry more places than the column keeps.
    groups = [
        RemovedGroup(*values[:5], *(_stored(amount) for amount in values[5:7]))
        for values in found
    ]
    return Removed(
        groups=groups,
        first=min((values[7] for values in found), default=None),
        last_end=max((values[8] for values in found), default=None),
    )


def _stored(amount: Decimal) -> Decimal:
    return Decimal(amount).quantize(COST_QUANTUM)


def _same_file_still_loaded(
    source: BillingSource, checksum: str, *, before: ImportRun
) -> ImportRun | None:
    """The earlier import of this very file, if no later import replaced its data."""
    loaded = source.import_runs.filter(status=ImportRun.Status.IMPORTED).exclude(
        pk=before.pk
    )
    same = loaded.filter(checksum=checksum).order_by(LOADED_AT.desc(), "-pk").first()
    return same if same and _still_held(same) else None


def _still_held(run: ImportRun) -> bool:
    """Whether no import of the run's source loaded after it restated any of its
    periods."""
    later = (
        ImportRun.objects.filter(
            source_id=run.source_id, status=ImportRun.Status.IMPORTED
        )
        .annotate(loaded_at=LOADED_AT)
        .filter(loaded_at__gte=run.finished_at or run.started_at)
        .exclude(pk=run.pk)
    )
    periods = set(run.billing_periods)
    restated = later.values_list("billing_periods", flat=True)
    return not any(periods & set(others) for others in restated)


def _finish(run: ImportRun, status: str, previous: ImportRun | None = None) -> None:
    """Record a successful import (imported, or unchanged); its source's status is
    its latest import, so a success clears the error of an earlier one."""
    if previous:
        run.rows_read, run.rows_loaded = previous.rows_read, previous.rows_loaded
        run.billing_periods, run.totals = previous.billing_periods, previous.totals
    run.status = status
    run.finished_at = timezone.now()
    run.save()
    audit.record(kind=audit.Kind.IMPORT, action=f"import {status}", target=run)
    if run.source_id is not None:
        BillingSource.objects.filter(pk=run.source_id).update(
            last_sync_at=run.finished_at, last_error=""
        )


def _unexplained(run: ImportRun, what: str, error: Exception) -> str:
    """What the portal says of a failure that is no fault of the input: a database
    error or a bug. Their own text (SQL, table and constraint names, values) is for
    the log, where this message sends whoever must look."""
    logger.error("import run %s failed", run.pk, exc_info=error)
    cause = (
        "a database error"
        if isinstance(error, DatabaseError)
        else f"an unexpected error ({type(error).__name__})"
    )
    return (
        f"{what}: the import stopped on {cause}, and nothing of it was loaded. "
        f"The details are in the log, under import run {run.pk}."
    )


def _fail(
    run: ImportRun, source: BillingSource | None, error: str | ImportFailure
) -> None:
    """Record a failure on the run, and on its source unless the import was to
    create it (a failed import leaves no new source) or gave up waiting for another
    one (which holds the source, and says itself how it went)."""
    run.refresh_from_db()
    run.status, run.error, run.finished_at = (
        ImportRun.Status.FAILED,
        str(error),
        timezone.now(),
    )
    run.rows_loaded = 0
    run.save()
    audit.record(kind=audit.Kind.IMPORT, action="import failed", target=run)
    if source is not None and not isinstance(error, LockWaitTimeout):
        # The source's status is its latest import: an import that started after
        # this one and has succeeded already says how the source is.
        succeeded_since = ImportRun.objects.filter(
            Q(started_at__gt=run.started_at)
            | Q(started_at=run.started_at, pk__gt=run.pk),
            source=source,
            status__in=[ImportRun.Status.IMPORTED, ImportRun.Status.UNCHANGED],
        )
        BillingSource.objects.filter(pk=source.pk).exclude(
            Exists(succeeded_since)
        ).update(last_error=str(error))


def _strings(amounts: Mapping[str, Decimal]) -> dict[str, str]:
    """Exact decimal strings, never in exponent notation (a zero sum: 0E-11)."""
    return {currency: f"{amount:f}" for currency, amount in sorted(amounts.items())}
