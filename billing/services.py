"""Billing imports, re-allocation of history, and the DailyCost rollup."""

import bisect
import hashlib
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Context, Decimal
from functools import partial
from itertools import chain, islice
from operator import attrgetter
from pathlib import Path

from dateutil.relativedelta import relativedelta
from django.conf import settings
from django.core.cache import cache
from django.core.files.uploadedfile import UploadedFile
from django.db import DatabaseError, connection, transaction
from django.db.models import (
    BooleanField,
    Count,
    ExpressionWrapper,
    F,
    Max,
    Min,
    Q,
    QuerySet,
    Sum,
)
from django.db.models.functions import TruncDate, TruncMonth
from django.utils import timezone

from billing.allocation import INPUTS, Allocator
from billing.importers import ImportFailure, importer_for
from billing.importers.base import ProviderError
from billing.loader import (
    LoadStats,
    copy_rows,
    cost_records_load,
    cost_records_load_file,
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
from billing.signals import import_finished
from billing.sync import fetcher_for
from core.currencies import ZERO
from core.dates import month_start, next_month
from projects.models import Project

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
    start = min(r.charge_period_start for r in changed).date()
    end = max(_last_moment(r.charge_period_end) for r in changed).date() + ONE_DAY
    daily_costs_rebuild(start=start, end=end)
    return start, end


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


# Any constant shared by every rebuild; the lock lasts until the transaction ends.
ROLLUP_LOCK_ID = 7_340_001


def _lock_rollup() -> None:
    """Rebuilds delete then insert: two at once over the same days would count twice.
    PostgreSQL serialises them with an advisory lock; SQLite has one writer anyway."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ROLLUP_LOCK_ID])
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
    it takes about as long at any size; PostgreSQL only, SQLite's planner needs none."""
    if connection.vendor == "postgresql":
        table = CostRecord._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {table} ({', '.join(ROLLUP_INPUTS)})")


@transaction.atomic
def daily_costs_rebuild(*, start: date, end: date) -> int:
    """Rebuild the DailyCost rows of charge dates in [start, end) from CostRecord.

    A charge of a day or less counts on the day it starts. A longer one (a monthly
    fee, an invoice period) is spread over its days in proportion to the time it
    covers, so that a day's spend and burn rate mean what they say; up to a quarter:
    a longer one counts on its first day, so that the charges spread into a range are
    found among those starting at most a quarter before it.
    """
    _lock_rollup()
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
            "source": self.run.source.name,
            "rows": self.run.rows_loaded,
            "billing_periods": self.run.billing_periods,
            "billed": totals.get("billed", {}),
            "effective": totals.get("effective", {}),
            "unallocated": totals.get("unallocated", {}),
            "error": self.run.error or None,
        }


def billing_import_file(
    *, path: Path, source_name: str, file_format: str = "auto"
) -> ImportOutcome:
    """Import one export file for a source, replacing that source's rows for every
    billing period in the file, in one transaction. The same file twice changes
    nothing and says so; any bad input leaves the database as it was."""
    try:
        importer = importer_for(path, file_format)
    except ImportFailure as failure:
        source = _source(source_name, file_format)
        run = ImportRun.objects.create(
            source=source, file_name=path.name, checksum=_sha256(path)
        )
        _fail(run, source, str(failure))
        return ImportOutcome(run)
    source = _source(source_name, importer.name)
    run = ImportRun.objects.create(
        source=source, file_name=path.name, file_format=file_format
    )
    if source.kind != importer.name:
        _fail(run, source, _kind_mismatch(source, importer.name, path.name))
        return ImportOutcome(run)
    return import_run_execute(run=run, path=path)


def _kind_mismatch(source: BillingSource, kind: str, file_name: str) -> str:
    # Importing into another kind's source would replace its data with unrelated rows.
    return (
        f"{file_name}: is a {kind} export, but {source.name!r} is a "
        f"{source.kind} source; use another source name"
    )


def billing_upload_accept(
    *, uploaded: UploadedFile, source_name: str, file_format: str = "auto"
) -> ImportRun:
    """Keep an uploaded export with a new ImportRun and queue its import. A file whose
    format cannot be recognised fails at once, so the person uploading sees why."""
    file_name = uploaded.name
    if file_name is None:  # a form's FileField gives only named files
        raise ValueError("an uploaded file has no name")
    source = _source(source_name, file_format)
    run = ImportRun.objects.create(
        source=source, file_name=file_name, file_format=file_format
    )
    run.upload.save(file_name, uploaded, save=True)
    try:
        importer = importer_for(Path(run.upload.path), file_format)
    except ImportFailure as failure:
        run.checksum = _sha256(Path(run.upload.path))
        _fail(run, source, str(failure))
        return run
    if source.kind != importer.name:
        if source.import_runs.exclude(pk=run.pk).exists():
            _fail(run, source, _kind_mismatch(source, importer.name, file_name))
            return run
        source.kind = importer.name  # a source created by this upload takes its kind
        source.save(update_fields=["kind"])
    from billing.tasks import import_upload  # tasks import this module

    transaction.on_commit(lambda: import_upload.delay(run.pk))
    return run


def import_run_execute(*, run: ImportRun, path: Path) -> ImportOutcome:
    """Run the import that `run` stands for: the file to the database, or a failure."""
    source = run.source
    run.checksum = _sha256(path)
    run.save(update_fields=["checksum"])
    try:
        importer = importer_for(path, run.file_format)
        with transaction.atomic():
            # One import of a source at a time: a second one waits here.
            BillingSource.objects.select_for_update().get(pk=source.pk)
            previous = _same_file_still_loaded(source, run.checksum, before=run)
            if previous:
                _finish(run, ImportRun.Status.UNCHANGED, previous=previous)
                return ImportOutcome(run)
            load = partial(cost_records_load_file, importer, path)
            _replace_periods(source, run, load)
    except ImportFailure as failure:
        _fail(run, source, str(failure))
    except (DatabaseError, ValueError, ArithmeticError) as exc:
        _fail(run, source, f"{run.file_name}: {exc}")
    return ImportOutcome(run)


def import_progress(run: ImportRun) -> int:
    """Rows loaded so far by a running import (the worker reports them)."""
    return cache.get(_progress_key(run.pk), 0)


def _progress_key(run_id: int) -> str:
    return f"import-progress:{run_id}"


class _Unchanged(Exception):
    """Raised inside the import transaction to roll back a reload of identical data."""

    def __init__(self, previous: ImportRun | None) -> None:
        self.previous = previous


def billing_sync_source(*, source_id: int) -> ImportOutcome:
    """Fetch a source's open and previous billing periods from its provider and load
    them like a file import. Provider outages raise ProviderError, for a retry later;
    identical data reports `unchanged` and leaves the database as it was."""
    source = BillingSource.objects.get(pk=source_id)
    fetcher = fetcher_for(source)
    if fetcher is None:
        raise ImportFailure(
            f"{source.name} is a {source.get_kind_display()} source: import its "
            "files with billing_import"
        )
    since = month_start(timezone.now()) - relativedelta(months=1)
    run = ImportRun.objects.create(source=source, file_name=f"{source.kind} API")
    digest = RowsFingerprint()
    try:
        with transaction.atomic():
            BillingSource.objects.select_for_update().get(pk=source.pk)
            rows = digest.passing(fetcher.fetch(source=source, since=since))
            # A fetcher may skip the periods it knows to be unchanged: it then names,
            # by the time fetch() returns, those it restates; the others keep their
            # rows, and when it restates none, nothing changed.
            window = {since, month_start(timezone.now())}
            periods = getattr(fetcher, "covered_periods", window)
            if not periods:
                raise _Unchanged(_latest_import(run))
            load = partial(cost_records_load, rows)
            _replace_periods(source, run, load, periods=sorted(periods))
            run.checksum = digest.hexdigest()
            run.save(update_fields=["checksum"])
            previous = _same_data_loaded(run)
            if previous:
                raise _Unchanged(previous)
    except _Unchanged as unchanged:
        run.refresh_from_db()
        run.checksum = digest.hexdigest()
        _finish(run, ImportRun.Status.UNCHANGED, previous=unchanged.previous)
        BillingSource.objects.filter(pk=source.pk).update(
            last_sync_at=timezone.now(), last_error=""
        )
    except ImportFailure as failure:
        _fail(run, source, str(failure))
    except (DatabaseError, ValueError, ArithmeticError) as exc:
        _fail(run, source, f"{source.name}: {exc}")
    except ProviderError as exc:
        _fail(run, source, f"{source.name}: the provider failed: {exc}")
        raise
    except Exception as exc:
        # A bug, not bad data: record it on the run, then let it surface.
        _fail(run, source, f"{source.name}: unexpected error: {exc!r}")
        raise
    return ImportOutcome(run)


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


def _latest_import(run: ImportRun) -> ImportRun | None:
    """The source's latest import before `run`."""
    return (
        run.source.import_runs.filter(status=ImportRun.Status.IMPORTED)
        .exclude(pk=run.pk)
        .order_by("-started_at", "-pk")
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
) -> None:
    """Load rows with `load` (cost_records_load or cost_records_load_file, given all
    but the ids, time and progress) and drop the source's older rows of every billing
    period they fall in, plus `periods`: a period the source no longer reports is
    emptied. Without `periods`, rows are required (a header only is a mistake)."""
    started = timezone.now()
    stats = load(
        source_id=source.pk,
        import_run_id=run.pk,
        now=started,
        progress=lambda count: cache.set(_progress_key(run.pk), count, 60 * 60),
    )
    if not stats.rows and not periods:
        raise ImportFailure("has a header but no cost rows", file=run.file_name)
    restated = stats.billing_periods | set(periods)
    replaced = CostRecord.objects.filter(
        source=source, billing_period_start__in=restated
    ).exclude(import_run=run)
    old_range = _cost_records_delete(replaced)
    if stats.rows >= ANALYZE_AFTER_ROWS:
        _statistics_refresh()
    touched = list(filter(None, [stats.first_charge, old_range["first"]]))
    if old_range["last_end"]:
        touched.append(_last_moment(old_range["last_end"]))
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
    _finish(run, ImportRun.Status.IMPORTED)
    closed = [p for p in restated if p < month_start(started)]
    source.last_sync_at, source.last_error = timezone.now(), ""
    if closed:
        complete = max(closed) + relativedelta(months=1)
        if not source.data_complete_through or complete > source.data_complete_through:
            source.data_complete_through = complete
    source.save(update_fields=["last_sync_at", "last_error", "data_complete_through"])
    transaction.on_commit(lambda: import_finished.send(sender=ImportRun, run=run))


def _cost_records_delete(records: QuerySet[CostRecord]) -> dict:
    """Delete cost records and return the span of charges they covered: the first
    start and the last end (a charge longer than a day counts on every day it
    covered), which the rollup rebuilds. On PostgreSQL in one pass over the rows, a
    DELETE whose returned rows the server sums up; at a million rows a second pass
    took about a second. Nothing refers to cost records: there is nothing to cascade.
    """
    if connection.vendor != "postgresql":
        span = records.aggregate(
            first=Min("charge_period_start"), last_end=Max("charge_period_end")
        )
        records.delete()
        return span
    query = records.query
    where, params = query.get_compiler(connection=connection).compile(query.where)
    table = connection.ops.quote_name(CostRecord._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH gone AS (DELETE FROM {table} WHERE {where} "
            "RETURNING charge_period_start, charge_period_end) "
            "SELECT min(charge_period_start), max(charge_period_end) FROM gone",
            params,
        )
        first, last_end = cursor.fetchone()
    return {"first": first, "last_end": last_end}


def _same_file_still_loaded(
    source: BillingSource, checksum: str, *, before: ImportRun
) -> ImportRun | None:
    """The earlier import of this very file, if no later import replaced its data."""
    loaded = source.import_runs.filter(status=ImportRun.Status.IMPORTED).exclude(
        pk=before.pk
    )
    same = loaded.filter(checksum=checksum).order_by("-started_at", "-pk").first()
    if same is None:
        return None
    periods = set(same.billing_periods)
    later = loaded.filter(started_at__gte=same.started_at).exclude(pk=same.pk)
    if any(periods & set(other.billing_periods) for other in later):
        return None
    return same


def _finish(run: ImportRun, status: str, previous: ImportRun | None = None) -> None:
    if previous:
        run.rows_read, run.rows_loaded = previous.rows_read, previous.rows_loaded
        run.billing_periods, run.totals = previous.billing_periods, previous.totals
    run.status = status
    run.finished_at = timezone.now()
    run.save()


def _fail(run: ImportRun, source: BillingSource, error: str) -> None:
    run.refresh_from_db()
    run.status, run.error, run.finished_at = (
        ImportRun.Status.FAILED,
        error,
        timezone.now(),
    )
    run.rows_loaded = 0
    run.save()
    source.last_error = error
    source.save(update_fields=["last_error"])


def _source(name: str, kind: str) -> BillingSource:
    kind = kind if kind in BillingSource.Kind.values else BillingSource.Kind.FOCUS
    source, _ = BillingSource.objects.get_or_create(name=name, defaults={"kind": kind})
    return source


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _strings(amounts: Mapping[str, Decimal]) -> dict[str, str]:
    return {currency: str(amount) for currency, amount in sorted(amounts.items())}
