"""The fast path into the database: rows stream into CostRecord through PostgreSQL's
COPY (psycopg 3), or bulk_create on SQLite, with allocation and totals on the way."""

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from itertools import islice

from django.db import connection

from billing.allocation import Allocator
from billing.models import COST_COLUMNS, COST_DIGITS, CostRecord

ZERO = Decimal("0")
COST_EXPONENT = -COST_DIGITS["decimal_places"]
COST_QUANTUM = Decimal(1).scaleb(COST_EXPONENT)
BATCH_SIZE = 5000
LOAD_FIELDS = [f.attname for f in CostRecord._meta.concrete_fields if f.attname != "id"]


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

    def count(self, row: dict) -> None:
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
        if row["project_id"] is None:
            self.unallocated[currency] += row["effective_cost"]
        else:
            self.unallocated[currency] += ZERO  # every currency appears in every total


PROGRESS_EVERY = 10_000


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
    allocator = Allocator()

    def prepared() -> Iterator[dict]:
        for row in rows:
            for column in COST_COLUMNS:
                # Totals must equal what the database keeps: round as it would, and
                # only values with more places than it keeps (doubles from Parquet).
                if row[column].as_tuple().exponent < COST_EXPONENT:
                    row[column] = row[column].quantize(COST_QUANTUM)
            allocation = allocator.allocate(row)
            row.update(
                source_id=source_id,
                import_run_id=import_run_id,
                project_id=allocation.project_id,
                training_run_id=allocation.training_run_id,
                is_provisional=_provisional(row, now),
            )
            stats.count(row)
            if stats.rows % PROGRESS_EVERY == 0:
                progress(stats.rows)
            yield row

    if connection.vendor == "postgresql":
        _copy(prepared())
    else:
        _bulk_create(prepared())
    return stats


def _provisional(row: dict, now: datetime) -> bool:
    """Spend is provisional while its billing period is open and no invoice covers it:
    the provider will restate it until then."""
    return row["billing_period_end"] > now and not row["invoice_id"]


def _copy(rows: Iterator[dict]) -> None:
    table = CostRecord._meta.db_table
    columns = ", ".join(connection.ops.quote_name(name) for name in LOAD_FIELDS)
    # The raw psycopg cursor raises psycopg's errors: wrap them as Django's, so the
    # import's failure handling sees a value out of range like any other error.
    with (
        connection.wrap_database_errors,
        connection.cursor() as cursor,
        cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy,
    ):
        for row in rows:
            row["tags"] = json.dumps(row["tags"])
            copy.write_row([row[name] for name in LOAD_FIELDS])


def _bulk_create(rows: Iterator[dict]) -> None:
    while batch := list(islice(rows, BATCH_SIZE)):
        CostRecord.objects.bulk_create(
            [CostRecord(**{name: row[name] for name in LOAD_FIELDS}) for row in batch]
        )
