"""The fast path into the database: rows stream into CostRecord through PostgreSQL's
COPY (psycopg 3), or bulk_create on SQLite, with allocation and totals on the way.

At a million rows a line, every step per row counts: rows are read once for the
totals and written as lines of COPY text, and whatever repeats (allocation, tags,
text and dates) is worked out once per distinct value (see billing.memo).
"""

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from itertools import islice
from operator import call, itemgetter
from typing import NamedTuple

from django.db import IntegrityError, connection
from django.db.models import Model

from billing.allocation import INPUTS, Allocation, Allocator
from billing.memo import MEMO_LIMIT, Memo
from billing.models import COST_DIGITS, BillingSource, CostRecord, ImportRun
from projects.models import Project, TrainingRun

ZERO = Decimal("0")
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


@dataclass
class LoadStats:
    rows: int = 0
    billing_periods: set[datetime] = field(default_factory=set)
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
        start = row["charge_period_start"]
        if self.first_charge is None or start < self.first_charge:
            self.first_charge = start
        if self.last_charge is None or start > self.last_charge:
            self.last_charge = start
        self.billed[currency] += row["billed_cost"]
        self.effective[currency] += row["effective_cost"]
        if not allocated:
            self.unallocated[currency] += row["effective_cost"]

    def finish(self) -> None:
        for currency in self.billed:  # every currency appears in every total
            self.unallocated[currency] += ZERO


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
            yield Loaded(row, tags, allocation, _provisional(row, now))

    if connection.vendor == "postgresql":
        _copy(prepared(), source_id=source_id, import_run_id=import_run_id)
    else:
        _bulk_create(prepared(), source_id=source_id, import_run_id=import_run_id)
    stats.finish()
    check_references(
        source_id,
        import_run_id,
        project_ids=allocations.project_ids,
        run_ids=allocations.run_ids,
    )
    return stats


def _as_stored(amount: Decimal) -> Decimal:
    stored = amount.quantize(COST_QUANTUM)
    return amount if stored == amount else stored  # "1.50" stays "1.50"


def _provisional(row: dict, now: datetime) -> bool:
    """Spend is provisional while its billing period is open and no invoice covers it:
    the provider will restate it until then."""
    return row["billing_period_end"] > now and not row["invoice_id"]


class _Allocations:
    """The allocation of each distinct allocation input, decided once per import, and
    the projects and runs handed out (for `check_references`)."""

    def __init__(self) -> None:
        self.allocator = Allocator()
        self.inputs = itemgetter(*INPUTS)
        self.known = Memo(self._decide)
        self.project_ids: set[int] = set()
        self.run_ids: set[int] = set()

    def of(self, row: dict, tags: str) -> Allocation:
        return self.known[(tags, *self.inputs(row))]

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
    source_id: int, import_run_id: int, *, project_ids: set, run_ids: set
) -> None:
    """CostRecord's foreign keys are not checked by the database row by row (at a
    million rows that took 11 s at commit, for a handful of distinct keys): check
    each distinct key once instead, and on PostgreSQL lock it as a foreign key check
    would (FOR KEY SHARE), so that it cannot be deleted before the import commits."""
    lock = " FOR KEY SHARE" if connection.vendor == "postgresql" else ""
    for model, ids in (
        (BillingSource, {source_id}),
        (ImportRun, {import_run_id}),
        (Project, project_ids - {None}),
        (TrainingRun, run_ids - {None}),
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
