"""The fast path into the database: rows stream into CostRecord through PostgreSQL's
COPY (psycopg 3), or bulk_create on SQLite, with allocation and totals on the way.

At a million rows a file, every step per row counts. Two paths do the same work:

- column by column (`cost_record_batches_load`), for importers that can read a file
  in blocks (FOCUS CSV): Arrow reads, encodes and writes the CSV that COPY takes, and
  Python sees each distinct value of a block once. It gives way to the row path
  wherever it cannot vouch for reading the file as the row path would;
- row by row (`cost_records_load`), for every other importer and for SQLite: rows are
  read once for the totals and written as lines of COPY text, and whatever repeats
  (allocation, tags, text and dates) is worked out once per distinct value.
"""

import json
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from itertools import islice
from operator import call, itemgetter
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
from django.db import IntegrityError, connection, transaction
from django.db.models import Model

from billing.allocation import INPUTS, Allocation, Allocator
from billing.importers.base import NO_AMOUNT, ColumnBatch, Importer, NotColumnar
from billing.memo import MEMO_LIMIT, Memo
from billing.models import COST_DIGITS, BillingSource, CostRecord, ImportRun
from core.currencies import ZERO
from projects.models import Project, TrainingRun

COST_EXPONENT = -COST_DIGITS["decimal_places"]
COST_QUANTUM = Decimal(1).scaleb(COST_EXPONENT)
BATCH_SIZE = 5000
# What the loader adds to the importer's row; the rest of CostRecord comes from it.
LOADER_FIELDS = (
    "tags",
    "source_id",
    "import_run_id",
    "is_provisional",
    "project_id",
    "training_run_id",
)
ROW_FIELDS = [
    f.attname
    for f in CostRecord._meta.concrete_fields
    if f.attname != "id" and f.attname not in LOADER_FIELDS
]


def _fields_of(kind: str) -> list[str]:
    return [
        name
        for name in ROW_FIELDS
        if CostRecord._meta.get_field(name).get_internal_type() == kind
    ]


# The row's fields by how they are written: amounts, moments, and text (the rest).
AMOUNT_FIELDS = _fields_of("DecimalField")
TIME_FIELDS = _fields_of("DateTimeField")
TEXT_FIELDS = [f for f in ROW_FIELDS if f not in AMOUNT_FIELDS + TIME_FIELDS]
# The order of the columns in each line of COPY text.
LOAD_FIELDS = TEXT_FIELDS + TIME_FIELDS + AMOUNT_FIELDS + list(LOADER_FIELDS)


logger = logging.getLogger(__name__)


# What a delivery restates: a billing period of a billing account and sub-account.
AccountPeriod = tuple[datetime, str, str]


@dataclass
class LoadStats:
    rows: int = 0
    billing_periods: set[datetime] = field(default_factory=set)
    account_periods: set[AccountPeriod] = field(default_factory=set)
    first_charge: datetime | None = None
    last_charge: datetime | None = None
    billed: defaultdict[str, Decimal] = field(
        default_factory=lambda: defaultdict(Decimal)
    )
    effective: defaultdict[str, Decimal] = field(
        default_factory=lambda: defaultdict(Decimal)
    )
    unallocated: defaultdict[str, Decimal] = field(
        default_factory=lambda: defaultdict(Decimal)
    )

    def count(self, row: dict, allocated: bool) -> None:
        currency = row["billing_currency"]
        self.rows += 1
        self.billing_periods.add(row["billing_period_start"])
        self.account_periods.add(
            (
                row["billing_period_start"],
                row["billing_account_id"],
                row["sub_account_id"],
            )
        )
        start = row["charge_period_start"]
        if self.first_charge is None or start < self.first_charge:
            self.first_charge = start
        if self.last_charge is None or start > self.last_charge:
            self.last_charge = start
        self.billed[currency] += row["billed_cost"]
        self.effective[currency] += row["effective_cost"]
        if not allocated:
            self.unallocated[currency] += row["effective_cost"]

    def count_batch(self, batch: ColumnBatch, unallocated: pa.Array) -> None:
        """What count() does for each row, for a batch of them at once."""
        values, indices = batch.values, batch.indices
        self.rows += batch.size
        for used in pc.unique(indices["billing_period_start"]).to_pylist():
            self.billing_periods.add(values["billing_period_start"][used])
        self.account_periods.update(_distinct(batch, ACCOUNT_PERIOD_FIELDS))
        starts = values["charge_period_start"]
        used = pc.unique(indices["charge_period_start"]).to_pylist()
        first, last = min(starts[i] for i in used), max(starts[i] for i in used)
        if self.first_charge is None or first < self.first_charge:
            self.first_charge = first
        if self.last_charge is None or last > self.last_charge:
            self.last_charge = last
        effective = batch.amounts["effective_cost"]
        amounts = {
            "billed": batch.amounts["billed_cost"],
            "effective": effective,
            "unallocated": pc.if_else(unallocated, effective, NO_AMOUNT),
        }
        totals = {
            "billed": self.billed,
            "effective": self.effective,
            "unallocated": self.unallocated,
        }
        currencies = values["billing_currency"]
        for index, currency in enumerate(currencies):
            if len(currencies) > 1:  # rare: the rows of each currency apart
                rows = pc.equal(indices["billing_currency"], index)
                amounts_of = {name: pc.filter(a, rows) for name, a in amounts.items()}
            else:
                amounts_of = amounts
            for name, text in amounts_of.items():
                if text.null_count < len(text):
                    # As a sum of Decimals would: exact, with the most places seen.
                    total = pc.sum(pc.cast(text, STORED_COST)).as_py()
                    places = Decimal(1).scaleb(-pc.max(_places(text)).as_py())
                    try:
                        totals[name][currency] += total.quantize(places)
                    except InvalidOperation:  # over 28 digits, which rows round
                        raise NotColumnar(f"a {name} total of {total}") from None

    def finish(self) -> None:
        for currency in self.billed:  # every currency appears in every total
            self.unallocated[currency] += ZERO

    def add(self, other: "LoadStats") -> None:
        """Count another load's rows in with these (the files of one delivery)."""
        self.rows += other.rows
        self.billing_periods |= other.billing_periods
        self.account_periods |= other.account_periods
        firsts = filter(None, [self.first_charge, other.first_charge])
        lasts = filter(None, [self.last_charge, other.last_charge])
        self.first_charge = min(firsts, default=None)
        self.last_charge = max(lasts, default=None)
        for mine, theirs in (
            (self.billed, other.billed),
            (self.effective, other.effective),
            (self.unallocated, other.unallocated),
        ):
            for currency, amount in theirs.items():
                mine[currency] += amount


ACCOUNT_PERIOD_FIELDS = ("billing_period_start", "billing_account_id", "sub_account_id")


def _distinct(batch: ColumnBatch, fields: tuple[str, ...]) -> Iterator[tuple]:
    """The distinct combinations of some fields' values in a batch: each row's
    combination numbered one field at a time (the code so far times the field's
    number of values, plus its index), in C++."""
    values, indices = batch.values, batch.indices
    first, *others = fields
    code = indices[first].cast(pa.int64())
    for name in others:
        code = pc.add(
            pc.multiply(code, len(values[name])), indices[name].cast(pa.int64())
        )
    for combination in pc.unique(code).to_pylist():
        found = []
        for name in reversed(others):
            combination, index = divmod(combination, len(values[name]))
            found.append(values[name][index])
        yield (values[first][combination], *reversed(found))


PROGRESS_EVERY = 10_000


class Loaded(NamedTuple):
    """One row as the loader writes it: the importer's row and what it adds."""

    row: dict
    tags: str  # as JSON
    allocation: Allocation
    is_provisional: bool


def cost_records_load(
    rows: Iterable[dict],
    *,
    source_id: int,
    import_run_id: int,
    now: datetime,
    progress: Callable[[int], None] = lambda count: None,
) -> LoadStats:
    """Allocate and insert rows; the caller owns the transaction."""
    stats = LoadStats()
    allocations = _Allocations()
    tags_json = _TagsJson()

    def prepared() -> Iterator[Loaded]:
        for row in rows:
            # Totals must equal what the database keeps: round as it would, before
            # summing, what has more places than it keeps (Parquet doubles, Azure).
            row["billed_cost"] = _as_stored(row["billed_cost"])
            row["effective_cost"] = _as_stored(row["effective_cost"])
            tags = tags_json[row["tags"]]
            allocation = allocations.of(row, tags)
            stats.count(row, allocation.project_id is not None)
            if stats.rows % PROGRESS_EVERY == 0:
                progress(stats.rows)
            provisional = _provisional(
                row["billing_period_end"], row["invoice_id"], now
            )
            yield Loaded(row, tags, allocation, provisional)

    if connection.vendor == "postgresql":
        _copy(prepared(), source_id=source_id, import_run_id=import_run_id)
    else:
        _bulk_create(prepared(), source_id=source_id, import_run_id=import_run_id)
    return allocations.finish(stats, source_id, import_run_id)


def cost_records_load_file(
    importer: Importer,
    path: Path,
    *,
    source_id: int,
    import_run_id: int,
    now: datetime,
    progress: Callable[[int], None] = lambda count: None,
) -> LoadStats:
    """Load an export file: column by column where its importer can read it so and
    the database is PostgreSQL (several times faster), else row by row. The columnar
    path gives way, undoing what it loaded, wherever it cannot be sure to read the
    file exactly as the row path does; the row path then reads it and decides."""
    column_batches = getattr(importer, "column_batches", None)
    if column_batches and connection.vendor == "postgresql":
        try:
            with transaction.atomic():
                return cost_record_batches_load(
                    column_batches(path),
                    source_id=source_id,
                    import_run_id=import_run_id,
                    now=now,
                    progress=progress,
                )
        except NotColumnar as reason:
            logger.info("%s: read row by row: %s", path.name, reason)
    return cost_records_load(
        importer.rows(path),
        source_id=source_id,
        import_run_id=import_run_id,
        now=now,
        progress=progress,
    )


def cost_records_load_files(
    importer: Importer,
    paths: list[Path],
    *,
    source_id: int,
    import_run_id: int,
    now: datetime,
    progress: Callable[[int], None] = lambda count: None,
) -> LoadStats:
    """Load the files of one delivery. An importer that reads a delivery as a whole
    (`rows_of_delivery`: Azure's actual and amortised datasets, counted once between
    them) reads its files together, one file too (what one file cannot give, it says
    in its warnings); any other reads them one after the other, each file on its
    fastest path."""
    rows_of_delivery = getattr(importer, "rows_of_delivery", None)
    if rows_of_delivery:
        return cost_records_load(
            rows_of_delivery(paths),
            source_id=source_id,
            import_run_id=import_run_id,
            now=now,
            progress=progress,
        )
    stats = LoadStats()
    for path in paths:
        stats.add(
            cost_records_load_file(
                importer,
                path,
                source_id=source_id,
                import_run_id=import_run_id,
                now=now,
                progress=_counting_on(progress, stats.rows),
            )
        )
    return stats


def _counting_on(progress: Callable[[int], None], done: int) -> Callable[[int], None]:
    """Progress of a delivery's next file, counted on from the rows of the others."""
    return lambda count: progress(done + count)


def cost_record_batches_load(
    batches: Iterable[ColumnBatch],
    *,
    source_id: int,
    import_run_id: int,
    now: datetime,
    progress: Callable[[int], None] = lambda count: None,
) -> LoadStats:
    """What cost_records_load does, for rows that arrive column by column: each
    batch becomes a block of COPY text joined by Arrow, and is allocated and counted
    one distinct value, or a whole column, at a time. PostgreSQL only; the caller
    owns the transaction."""
    stats = LoadStats()
    allocations = _Allocations()
    tags_json = _TagsJson()
    text = Memo(_copy_text)
    moment = Memo(datetime.isoformat)
    ids = [pa.scalar(str(key)) for key in (source_id, import_run_id)]
    table = CostRecord._meta.db_table
    columns = ", ".join(connection.ops.quote_name(name) for name in LOAD_FIELDS)
    with (
        connection.wrap_database_errors,
        connection.cursor() as cursor,
        cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy,
    ):
        for batch in batches:
            if not batch.size:
                continue
            project, run = allocations.of_batch(batch, tags_json)
            provisional = _provisional_per_row(batch, now)
            stats.count_batch(batch, unallocated=pc.is_null(project))
            cells = [
                *(_coded(batch, name, text.__getitem__) for name in TEXT_FIELDS),
                *(_coded(batch, name, moment.__getitem__) for name in TIME_FIELDS),
                *(batch.amounts[name] for name in AMOUNT_FIELDS),
                _coded(batch, "tags", lambda tags: text[tags_json[tags]]),
                *ids,
                pc.if_else(provisional, "t", "f"),
                pc.cast(project, pa.string()),
                pc.cast(run, pa.string()),
            ]
            # COPY's text format (cheaper for the server to read than CSV): cells
            # joined by tabs, nulls as \N, lines joined by line ends.
            lines = pc.binary_join_element_wise(*cells, "\t", options=COPY_NULLS)
            block = pc.binary_join(_as_one_list(lines), "\n")[0].as_buffer()
            copy.write(memoryview(block))
            copy.write(b"\n")
            if (
                stats.rows // PROGRESS_EVERY
                > (stats.rows - batch.size) // PROGRESS_EVERY
            ):
                progress(stats.rows)
    return allocations.finish(stats, source_id, import_run_id)


# What CostRecord keeps of a cost (COST_DIGITS), as an Arrow type for summing.
STORED_COST = pa.decimal128(COST_DIGITS["max_digits"], COST_DIGITS["decimal_places"])


def _places(amounts: pa.Array) -> pa.Array:
    """The decimal places written in each amount (plain decimals: 1.50 has two)."""
    point = pc.find_substring(amounts, ".")
    return pc.if_else(
        pc.less(point, 0), 0, pc.subtract(pc.binary_length(amounts), point + 1)
    )


COPY_NULLS = pc.JoinOptions(null_handling="replace", null_replacement="\\N")


def _coded(batch: ColumnBatch, field: str, text: Callable) -> pa.Array:
    """The field's COPY text for each row, worked out once per distinct value."""
    per_value = pa.array(list(map(text, batch.values[field])), pa.string())
    return pc.take(per_value, batch.indices[field])


def _as_one_list(values: pa.Array) -> pa.ListArray:
    return pa.ListArray.from_arrays(pa.array([0, len(values)], pa.int32()), values)


def _provisional_per_row(batch: ColumnBatch, now: datetime) -> pa.Array:
    """`_provisional` of each row, decided once per distinct (billing period end,
    invoice id) pair: each row's pair is numbered end index times the number of
    invoice ids, plus its invoice id's index."""
    ends, invoices = batch.values["billing_period_end"], batch.values["invoice_id"]
    pairs = pc.dictionary_encode(
        pc.add(
            pc.multiply(
                batch.indices["billing_period_end"].cast(pa.int64()), len(invoices)
            ),
            batch.indices["invoice_id"].cast(pa.int64()),
        )
    )
    decided = [
        _provisional(ends[pair // len(invoices)], invoices[pair % len(invoices)], now)
        for pair in pairs.dictionary.to_pylist()
    ]
    return pc.take(pa.array(decided, pa.bool_()), pairs.indices)


def _as_stored(amount: Decimal) -> Decimal:
    stored = amount.quantize(COST_QUANTUM)
    return amount if stored == amount else stored  # "1.50" stays "1.50"


def _provisional(
    billing_period_end: datetime, invoice_id: str | None, now: datetime
) -> bool:
    """Spend is provisional while its billing period is open and no invoice covers it:
    the provider will restate it until then. The one statement of the rule: the row
    and the columnar path both call it."""
    return billing_period_end > now and not invoice_id


class _Allocations:
    """The allocation of each distinct allocation input, decided once per import, and
    the projects and runs handed out (for `check_references`)."""

    def __init__(self) -> None:
        self.allocator = Allocator()
        self.inputs = itemgetter(*INPUTS)
        self.known = Memo(self._decide)
        # None (unallocated) included: check_references leaves it out.
        self.project_ids: set[int | None] = set()
        self.run_ids: set[int | None] = set()

    def finish(self, stats: LoadStats, source_id: int, import_run_id: int) -> LoadStats:
        """The end of a load: totals complete, and every key handed out checked."""
        stats.finish()
        check_references(
            source_id,
            import_run_id,
            project_ids=self.project_ids,
            run_ids=self.run_ids,
        )
        return stats

    def of(self, row: dict, tags: str) -> Allocation:
        return self.known[(tags, *self.inputs(row))]

    def of_batch(
        self, batch: ColumnBatch, tags_json: "_TagsJson"
    ) -> tuple[pa.Array, pa.Array]:
        """The project and training run of each row of a batch, decided once per
        distinct combination of the inputs that decide it (tags, and the columns the
        rules match). The combinations are found in C++ by numbering them one input
        at a time: each step's code is the previous step's code times the input's
        number of values, plus its index."""
        values, indices = batch.values, batch.indices
        used = self.allocator.inputs
        code = indices["tags"]
        steps = []
        for name in used:
            size = len(values[name])
            combined = pc.add(
                pc.multiply(code.cast(pa.int64()), size),
                indices[name].cast(pa.int64()),
            )
            encoded = pc.dictionary_encode(combined)
            steps.append((size, encoded.dictionary.to_pylist()))
            code = encoded.indices
        # Each distinct combination, as code[row] numbers them: its tags (the index
        # left after taking every input's index off the codes) and its inputs.
        decided = []
        for combination in range(len(steps[-1][1]) if steps else len(values["tags"])):
            at, inputs = combination, dict.fromkeys(INPUTS, "")  # unused: any value
            for name, (size, known) in zip(
                reversed(used), reversed(steps), strict=True
            ):
                at, part = divmod(known[at], size)
                inputs[name] = values[name][part]
            tags = tags_json[values["tags"][at]]
            decided.append(self.known[(tags, *inputs.values())])
        project = pa.array([a.project_id for a in decided], pa.int64())
        run = pa.array([a.training_run_id for a in decided], pa.int64())
        return pc.take(project, code), pc.take(run, code)

    def _decide(self, key: tuple) -> Allocation:
        tags, *inputs = key
        allocation = self.allocator.allocate(
            {"tags": json.loads(tags), **dict(zip(INPUTS, inputs, strict=True))}
        )
        self.project_ids.add(allocation.project_id)
        self.run_ids.add(allocation.training_run_id)
        return allocation


class _TagsJson:
    """The JSON of each tags dict. An importer that reads the same raw tags once gives
    the rows that carry them one shared dict, whose JSON is then worked out once. The
    dict is held while cached, so that its id() cannot be reused by another."""

    def __init__(self) -> None:
        self.known: dict[int, tuple[dict, str]] = {}

    def __getitem__(self, tags: dict) -> str:
        try:
            return self.known[id(tags)][1]
        except KeyError:
            if len(self.known) >= MEMO_LIMIT:
                self.known.clear()
            text = json.dumps(tags)
            self.known[id(tags)] = (tags, text)
            return text


def check_references(
    source_id: int,
    import_run_id: int,
    *,
    project_ids: set[int | None],
    run_ids: set[int | None],
) -> None:
    """CostRecord's foreign keys are not checked by the database row by row (at a
    million rows that took 11 s at commit, for a handful of distinct keys): check
    each distinct key once instead, and on PostgreSQL lock it as a foreign key check
    would (FOR KEY SHARE), so that it cannot be deleted before the import commits."""
    lock = " FOR KEY SHARE" if connection.vendor == "postgresql" else ""
    for model, ids in (
        (BillingSource, {source_id}),
        (ImportRun, {import_run_id}),
        (Project, {pk for pk in project_ids if pk is not None}),
        (TrainingRun, {pk for pk in run_ids if pk is not None}),
    ):
        if not ids:
            continue
        table = connection.ops.quote_name(model._meta.db_table)
        marks = ", ".join(["%s"] * len(ids))
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT id FROM {table} WHERE id IN ({marks}){lock}", [*ids]
            )
            missing = ids - {found for (found,) in cursor.fetchall()}
        if missing:
            raise IntegrityError(
                f"{model._meta.verbose_name} {sorted(missing)} no longer exists"
            )


# COPY's text format: tab-separated, \N for null, and these characters escaped.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
COPY_BLOCK_ROWS = 1000


def _copy_text(value: str) -> str:
    return value.translate(_COPY_ESCAPES)


def _copy_number(value: Decimal | None) -> str:
    return "\\N" if value is None else str(value)


class _CopyLine:
    """Writes a row as the start of its line of COPY text, in LOAD_FIELDS order.

    Rows of one export repeat the same description of a resource (account, service,
    region, SKU...) hour after hour: the text columns are written once per distinct
    combination, and each moment once per distinct moment. Amounts, nearly all
    distinct, are written every time.
    """

    def __init__(self) -> None:
        self.texts = itemgetter(*TEXT_FIELDS)
        self.described = Memo(self._texts)
        self.text = Memo(_copy_text)
        self.times = itemgetter(*TIME_FIELDS)
        self.moment = Memo(datetime.isoformat)
        self.amounts = itemgetter(*AMOUNT_FIELDS)
        self.amount = [
            _copy_number if CostRecord._meta.get_field(name).null else str
            for name in AMOUNT_FIELDS
        ]

    def _texts(self, values: tuple[str, ...]) -> str:
        return "\t".join(map(self.text.__getitem__, values))

    def __call__(self, row: dict) -> str:
        return "\t".join(
            (
                self.described[self.texts(row)],
                *map(self.moment.__getitem__, self.times(row)),
                *map(call, self.amount, self.amounts(row)),
            )
        )


def _copy(rows: Iterator[Loaded], *, source_id: int, import_run_id: int) -> None:
    table = CostRecord._meta.db_table
    columns = ", ".join(connection.ops.quote_name(name) for name in LOAD_FIELDS)
    line = _CopyLine()
    loader_ids = f"{source_id}\t{import_run_id}"
    ids = Memo(lambda key: "\\N" if key is None else str(key))
    tags = Memo(_copy_text)
    # The raw psycopg cursor raises psycopg's errors: wrap them as Django's, so the
    # import's failure handling sees a value out of range like any other error.
    with (
        connection.wrap_database_errors,
        connection.cursor() as cursor,
        cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy,
    ):
        while block := list(islice(rows, COPY_BLOCK_ROWS)):
            copy.write(
                "".join(
                    [
                        f"{line(loaded.row)}\t{tags[loaded.tags]}\t{loader_ids}"
                        f"\t{'t' if loaded.is_provisional else 'f'}"
                        f"\t{ids[loaded.allocation.project_id]}"
                        f"\t{ids[loaded.allocation.training_run_id]}\n"
                        for loaded in block
                    ]
                )
            )


def copy_rows(model: type[Model], fields: list[str], rows: Iterable[Iterable]) -> None:
    """Insert rows of plain values (text, numbers, dates, booleans, None) into the
    model's table with one COPY (PostgreSQL): no SQL to build per value."""
    table = connection.ops.quote_name(model._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(name) for name in fields)
    with (
        connection.wrap_database_errors,
        connection.cursor() as cursor,
        cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy,
    ):
        copy.write(
            "".join("\t".join(map(_copy_value, values)) + "\n" for values in rows)
        )


def _copy_value(value: object) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, str):
        return _copy_text(value)
    return str(value)  # numbers, Decimal, date


def _bulk_create(rows: Iterator[Loaded], *, source_id: int, import_run_id: int) -> None:
    while batch := list(islice(rows, BATCH_SIZE)):
        CostRecord.objects.bulk_create(
            [
                CostRecord(
                    **{name: loaded.row[name] for name in ROW_FIELDS},
                    tags=loaded.row["tags"],
                    source_id=source_id,
                    import_run_id=import_run_id,
                    is_provisional=loaded.is_provisional,
                    project_id=loaded.allocation.project_id,
                    training_run_id=loaded.allocation.training_run_id,
                )
                for loaded in batch
            ]
        )
