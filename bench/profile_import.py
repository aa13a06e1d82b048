"""Where the time and memory of `billing_import` go: the diagnostics behind README.md.

Runs inside one Python process with Django set up (the application code untouched; its
functions are wrapped with timers at run time), against its own PostgreSQL database
created, migrated and seeded like the benchmark's, and dropped at the end.

    phases  import then reimport (restated file) through billing_import_file(), timing
            each phase: checksum, parsing (inside the importer's generator), allocation,
            LoadStats, the COPY (write_row and the server), the lookup and delete of the
            replaced rows, the DailyCost rebuild (delete, aggregate query, bulk_create),
            the commit (where the deferred foreign-key checks run); peak RSS after each.
            Then EXPLAIN ANALYZE of the rollup query.
    client  the Python side alone, stage by stage, over the same file: csv.reader,
            CsvFile.records(), FocusImporter.rows(), + Allocator, + all the loader does
            but write_row, + write_row into COPY of an unindexed copy of the table;
            then a prototype of a leaner path (positional csv, cached allocation and
            timestamps, pre-formatted COPY text) into the same table and the real one.
    server  the database side alone: the loaded rows dumped with COPY TO (text format),
            then COPY FROM of that dump, to commit, into: an unindexed, unconstrained
            copy of the table; the same with its indexes built after the load; a copy
            with the indexes and check constraint; + the deferred foreign keys on
            project and training_run; + all four (as the real table); and the real
            billing_costrecord, emptied first.

    .venv/bin/python bench/profile_import.py --rows 1000000 phases client server
"""

import argparse
import csv
import json
import os
import resource
import sys
import time
from collections import defaultdict
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import import_benchmark as bench  # noqa: E402

PLAIN, INDEXED = "bench_cost_plain", "bench_cost_indexed"


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Timers:
    def __init__(self) -> None:
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.calls: defaultdict[str, int] = defaultdict(int)
        self.peak_after: dict[str, float] = {}

    @contextmanager
    def time(self, label: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[label] += time.perf_counter() - started
            self.calls[label] += 1
            self.peak_after[label] = peak_mb()

    def wrap(self, owner, name: str, label=None):
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            tag = label(*args) if callable(label) else (label or name)
            with self.time(tag):
                return original(*args, **kwargs)

        setattr(owner, name, wrapper)
        return original

    def report(self, total: float) -> list[dict]:
        return [
            {
                "phase": label,
                "seconds": round(seconds, 2),
                "share": round(seconds / total, 3),
                "calls": self.calls[label],
                "peak_rss_mb_after": round(self.peak_after.get(label, 0), 1),
            }
            for label, seconds in sorted(self.seconds.items(), key=lambda kv: -kv[1])
        ]


def django_setup(app_dir: Path, database_url: str) -> None:
    os.environ.update(
        DATABASE_URL=database_url,
        DJANGO_DEBUG="false",
        DJANGO_SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY", "bench-only-secret-key"),
        DJANGO_SETTINGS_MODULE="spendtracker.settings",
        REPORTING_CURRENCY="USD",
    )
    sys.path.insert(0, str(app_dir))
    os.chdir(app_dir)
    import django

    django.setup()


# ------------------------------------------------------------------------- phases


def phases(original: Path, restated: Path) -> dict:
    from django.db import connections
    from django.db.models.query import QuerySet

    import billing.loader as loader
    import billing.services as services
    from billing.allocation import Allocator
    from billing.importers.focus import FocusImporter
    from billing.models import CostRecord, DailyCost

    timers = Timers()
    original_rows = FocusImporter.rows

    def timed_rows(self, path):
        rows = original_rows(self, path)
        while True:
            started = time.perf_counter()
            try:
                row = next(rows)
            except StopIteration:
                timers.seconds["parse and normalise (importer)"] += (
                    time.perf_counter() - started
                )
                return
            timers.seconds["parse and normalise (importer)"] += (
                time.perf_counter() - started
            )
            yield row

    FocusImporter.rows = timed_rows
    timers.wrap(Allocator, "allocate", "allocation (Allocator.allocate)")
    timers.wrap(loader.LoadStats, "count", "LoadStats.count")
    timers.wrap(loader, "_copy", "COPY total (incl. rows pulled through it)")
    timers.wrap(services, "_sha256", "checksum (sha256)")
    timers.wrap(services, "importer_for", "importer_for (header sniff)")
    timers.wrap(services, "daily_costs_rebuild", "DailyCost rebuild total")
    timers.wrap(QuerySet, "delete", lambda qs: f"{qs.model.__name__} delete")
    timers.wrap(QuerySet, "aggregate", lambda qs, *a: f"{qs.model.__name__} aggregate")
    timers.wrap(
        QuerySet, "bulk_create", lambda qs, *a: f"{qs.model.__name__} bulk_create"
    )
    original_fetch = QuerySet._fetch_all

    def fetch(self):
        if self.model in (CostRecord, DailyCost) and self._result_cache is None:
            with timers.time(f"{self.model.__name__} query (rollup groups)"):
                return original_fetch(self)
        return original_fetch(self)

    QuerySet._fetch_all = fetch
    connection = connections["default"]
    connection.ensure_connection()
    timers.wrap(connection, "commit", "commit (deferred FK checks)")

    out = {}
    for label, path in (("import", original), ("reimport", restated)):
        timers.__init__()
        started = time.perf_counter()
        outcome = services.billing_import_file(path=path, source_name="bench")
        total = time.perf_counter() - started
        assert outcome.run.status == "imported", outcome.run.error
        breakdown = timers.report(total)
        copy_total = timers.seconds["COPY total (incl. rows pulled through it)"]
        inside = sum(
            timers.seconds[k]
            for k in (
                "parse and normalise (importer)",
                "allocation (Allocator.allocate)",
                "LoadStats.count",
            )
        )
        out[label] = {
            "seconds": round(total, 2),
            "rows": outcome.run.rows_loaded,
            "peak_rss_mb": round(peak_mb(), 1),
            "copy_minus_parse_alloc_count_s": round(copy_total - inside, 2),
            "phases": breakdown,
        }
        print(f"\n{label}: {total:.1f} s, {outcome.run.rows_loaded:,} rows")
        for item in breakdown:
            print(
                f"  {item['seconds']:8.2f} s {item['share']:6.1%}  {item['phase']}"
                f"  (x{item['calls']}, peak {item['peak_rss_mb_after']:.0f} MB after)"
            )
        print(f"  {copy_total - inside:8.2f} s  = COPY minus parse/alloc/count")
    out["rollup_explain"] = rollup_explain()
    print("\n".join(out["rollup_explain"]))
    return out


def rollup_explain() -> list[str]:
    """The DailyCost rebuild's aggregate query, as daily_costs_rebuild builds it."""
    from datetime import UTC, datetime

    from django.db.models import Q, Sum
    from django.db.models.functions import TruncDate

    from billing.models import COST_COLUMNS, GPU_HOUR_UNITS, CostRecord

    gpu_units = Q()
    for unit in GPU_HOUR_UNITS:
        gpu_units |= Q(consumed_unit__iexact=unit)
    query = (
        CostRecord.objects.filter(
            charge_period_start__gte=datetime(2026, 10, 1, tzinfo=UTC),
            charge_period_start__lt=datetime(2026, 11, 1, tzinfo=UTC),
        )
        .annotate(day=TruncDate("charge_period_start", tzinfo=UTC))
        .values(
            "day",
            "project_id",
            "training_run_id",
            "provider_name",
            "service_name",
            "billing_currency",
            "is_provisional",
        )
        .annotate(
            **{column: Sum(column) for column in COST_COLUMNS},
            gpu_hours=Sum("consumed_quantity", filter=gpu_units),
        )
        .order_by()
    )
    return query.explain(analyze=True, buffers=True).splitlines()


# ------------------------------------------------------------------------- client


def client(path: Path, database_url: str) -> dict:
    import psycopg

    import billing.loader as loader
    from billing.allocation import Allocator
    from billing.importers.base import CsvFile
    from billing.importers.focus import FocusImporter
    from billing.models import BillingSource

    results = {}

    def stage(label: str, work) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        rows = work()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        results[label] = {
            "rows": rows,
            "wall_s": round(wall, 2),
            "cpu_s": round(cpu, 2),
            "us_per_row": round(wall / rows * 1e6, 2),
        }
        per_row = wall / rows * 1e6
        print(f"  {wall:7.2f} s wall {cpu:7.2f} s cpu {per_row:6.1f} us/row  {label}")

    def csv_only() -> int:
        with CsvFile(path).open() as text:
            return sum(1 for _ in csv.reader(text)) - 1

    def records() -> int:
        return sum(1 for _ in CsvFile(path).records())

    def importer() -> int:
        return sum(1 for _ in FocusImporter().rows(path))

    allocator = Allocator()
    source_id = BillingSource.objects.get_or_create(
        name="bench", defaults={"kind": "focus"}
    )[0].pk

    def allocated() -> int:
        count = 0
        for row in FocusImporter().rows(path):
            allocator.allocate(row)
            count += 1
        return count

    def prepared_rows():
        from django.utils import timezone

        stats, now = loader.LoadStats(), timezone.now()
        for row in FocusImporter().rows(path):
            allocation = allocator.allocate(row)
            row.update(
                source_id=source_id,
                import_run_id=None,
                project_id=allocation.project_id,
                training_run_id=allocation.training_run_id,
                is_provisional=row["billing_period_end"] > now,
            )
            stats.count(row)
            row["tags"] = json.dumps(row["tags"])
            yield [row[name] for name in loader.LOAD_FIELDS]

    def all_but_write_row() -> int:
        return sum(1 for _ in prepared_rows())

    columns = ", ".join(f'"{name}"' for name in loader.LOAD_FIELDS)

    def copy_into(table: str, feed) -> int:
        with psycopg.connect(database_url) as conn:
            with conn.cursor() as cur:
                cur.execute(f"TRUNCATE {PLAIN}")
                # Foreign keys checked at the end of the COPY rather than at a
                # commit that never comes: the timing includes them.
                cur.execute("SET CONSTRAINTS ALL IMMEDIATE")
            with (
                conn.cursor() as cur,
                cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy,
            ):
                count = feed(copy)
            conn.rollback()  # nothing kept; the real table is left as it was
        return count

    def write_row(copy) -> int:
        count = 0
        for values in prepared_rows():
            copy.write_row(values)
            count += 1
        return count

    make_plain_table(database_url)
    print(f"client stages over {path.name}:")
    stage("csv.reader only", csv_only)
    stage("CsvFile.records() (csv + dict per row)", records)
    stage("FocusImporter.rows() (parse, normalise)", importer)
    stage("+ Allocator.allocate", allocated)
    stage(
        "+ loader work but write_row (update, count, json.dumps, list)",
        all_but_write_row,
    )
    stage(
        "+ write_row into COPY of unindexed table (= loader, no indexes)",
        lambda: copy_into(PLAIN, write_row),
    )
    lean = LeanPath(path, allocator, source_id)
    stage(
        "prototype lean path -> COPY text, unindexed table",
        lambda: copy_into(PLAIN, lean.feed),
    )
    stage(
        "prototype lean path -> COPY text, billing_costrecord (indexes, FKs; rollback)",
        lambda: copy_into("billing_costrecord", lean.feed),
    )
    stage(
        "loader path -> write_row, billing_costrecord (indexes, FKs; rollback)",
        lambda: copy_into("billing_costrecord", write_row),
    )
    drop_tables(database_url)
    return results


class LeanPath:
    """A prototype of a cheaper row path, for measurement only (not a drop-in): rows
    stay lists, columns are found by position once, text cleaning (strip, null
    spellings, length limits, canonical spellings, COPY escaping) is cached per
    distinct value of each column, allocation per distinct (tags, accounts, resource,
    service), timestamps per distinct string, and each row becomes one line of COPY
    text format, sent in blocks of 1,000 rows. BilledCost and EffectiveCost are still
    parsed as Decimal (for the totals); the other amounts reach the server as text,
    which checks them; the CostRecord check constraint still holds."""

    _ESCAPE = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
    TEXT_COLUMNS = (
        ("billing_account_id", "BillingAccountId"),
        ("billing_account_name", "BillingAccountName"),
        ("sub_account_id", "SubAccountId"),
        ("sub_account_name", "SubAccountName"),
        ("charge_category", "ChargeCategory"),
        ("charge_class", "ChargeClass"),
        ("charge_description", "ChargeDescription"),
        ("charge_frequency", "ChargeFrequency"),
        ("billing_currency", "BillingCurrency"),
        ("invoice_id", "InvoiceId"),
        ("provider_name", "ProviderName"),
        ("publisher_name", "PublisherName"),
        ("invoice_issuer_name", "InvoiceIssuerName"),
        ("service_name", "ServiceName"),
        ("service_category", "ServiceCategory"),
        ("region_id", "RegionId"),
        ("resource_id", "ResourceId"),
        ("resource_name", "ResourceName"),
        ("resource_type", "ResourceType"),
        ("sku_id", "SkuId"),
        ("consumed_unit", "ConsumedUnit"),
    )

    def __init__(self, path: Path, allocator, source_id: int) -> None:
        self.path, self.allocator, self.source_id = path, allocator, str(source_id)

    def feed(self, copy) -> int:
        from datetime import UTC, datetime

        from billing.importers.base import NULLS, parse_timestamp
        from billing.importers.focus import CANONICAL
        from billing.models import CostRecord

        now = datetime.now(UTC)
        escape = self._ESCAPE
        limits = [
            CostRecord._meta.get_field(field).max_length
            for field, _ in self.TEXT_COLUMNS
        ]
        canonical = {4, 5, 7}
        caches: list[dict[str, str]] = [{} for _ in self.TEXT_COLUMNS]

        def clean(k: int, raw: str) -> str:
            value = raw.strip()
            if value in NULLS:
                value = ""
            if limits[k] and len(value) > limits[k]:
                raise ValueError(f"{self.TEXT_COLUMNS[k][1]} too long")
            if k in canonical:
                value = CANONICAL.get(value.lower(), value)
            if k == 8:
                value = value.upper()
            cache = caches[k]
            if len(cache) > 100_000:
                cache.clear()
            cache[raw] = value = value.translate(escape)
            return value

        allocations: dict[tuple, tuple] = {}
        stamps: dict[str, tuple[datetime, str]] = {}
        billed: defaultdict[str, Decimal] = defaultdict(Decimal)
        effective: defaultdict[str, Decimal] = defaultdict(Decimal)

        def stamp(value: str) -> tuple[datetime, str]:
            hit = stamps.get(value)
            if hit is None:
                moment = parse_timestamp(value)
                hit = stamps[value] = (moment, moment.isoformat())
            return hit

        count = 0
        buffer: list[str] = []
        source = self.source_id
        with self.path.open(encoding="utf-8-sig", newline="") as stream:
            reader = csv.reader(stream)
            header = next(reader)
            at = {column: index for index, column in enumerate(header)}
            positions = [at[column] for _, column in self.TEXT_COLUMNS]
            h = list(zip(range(4), positions[:4], strict=True))
            m = list(zip(range(4, 20), positions[4:20], strict=True))
            cache = caches
            i_billed, i_effective = at["BilledCost"], at["EffectiveCost"]
            i_list, i_contracted = at["ListCost"], at["ContractedCost"]
            i_quantity, i_tags = at["ConsumedQuantity"], at["Tags"]
            i_cps, i_cpe = at["ChargePeriodStart"], at["ChargePeriodEnd"]
            i_bps, i_bpe = at["BillingPeriodStart"], at["BillingPeriodEnd"]
            i_unit = at["ConsumedUnit"]
            i_acct, i_sub = at["BillingAccountId"], at["SubAccountId"]
            i_res, i_svc = at["ResourceId"], at["ServiceName"]
            width = len(header)
            for values in reader:
                if len(values) != width:
                    raise ValueError("field count differs from the header")
                key = (
                    values[i_tags],
                    values[i_acct],
                    values[i_sub],
                    values[i_res],
                    values[i_svc],
                )
                hit = allocations.get(key)
                if hit is None:
                    tags = json.loads(values[i_tags]) if values[i_tags] else {}
                    allocation = self.allocator.allocate(
                        {
                            "tags": tags,
                            "billing_account_id": values[i_acct].strip(),
                            "sub_account_id": values[i_sub].strip(),
                            "resource_id": values[i_res].strip(),
                            "service_name": values[i_svc].strip(),
                        }
                    )
                    if len(allocations) > 100_000:
                        allocations.clear()
                    hit = allocations[key] = (
                        "\\N"
                        if allocation.project_id is None
                        else str(allocation.project_id),
                        "\\N"
                        if allocation.training_run_id is None
                        else str(allocation.training_run_id),
                        json.dumps(tags).translate(escape),
                    )
                project, run, tags_text = hit
                cps, cps_text = stamp(values[i_cps])
                cpe, cpe_text = stamp(values[i_cpe])
                bpe, bpe_text = stamp(values[i_bpe])
                if cpe < cps:
                    raise ValueError("ChargePeriodEnd before ChargePeriodStart")
                currency = caches[8].get(values[at["BillingCurrency"]]) or clean(
                    8, values[at["BillingCurrency"]]
                )
                bill, eff = Decimal(values[i_billed]), Decimal(values[i_effective])
                billed[currency] += bill
                effective[currency] += eff
                listed = values[i_list] or values[i_contracted] or values[i_billed]
                contracted = values[i_contracted] or values[i_list] or values[i_billed]
                line = "\t".join(
                    (
                        values[i_billed], values[i_effective], listed, contracted,
                        source, "\\N",
                        *[cache[k].get(values[i]) or clean(k, values[i]) for k, i in h],
                        stamp(values[i_bps])[1], bpe_text, cps_text, cpe_text,
                        *[cache[k].get(values[i]) or clean(k, values[i]) for k, i in m],
                        values[i_quantity] or "\\N",
                        caches[20].get(values[i_unit]) or clean(20, values[i_unit]),
                        tags_text, "t" if bpe > now else "f", project, run,
                    )
                )  # fmt: skip
                buffer.append(line)
                count += 1
                if len(buffer) >= 1000:
                    buffer.append("")
                    copy.write("\n".join(buffer))
                    buffer.clear()
        if buffer:
            buffer.append("")
            copy.write("\n".join(buffer))
        return count


EXPECTED_ORDER = [
    "billed_cost", "effective_cost", "list_cost", "contracted_cost", "source_id",
    "import_run_id", "billing_account_id", "billing_account_name", "sub_account_id",
    "sub_account_name", "billing_period_start", "billing_period_end",
    "charge_period_start", "charge_period_end", "charge_category", "charge_class",
    "charge_description", "charge_frequency", "billing_currency", "invoice_id",
    "provider_name", "publisher_name", "invoice_issuer_name", "service_name",
    "service_category", "region_id", "resource_id", "resource_name", "resource_type",
    "sku_id", "consumed_quantity", "consumed_unit", "tags", "is_provisional",
    "project_id", "training_run_id",
]  # fmt: skip


def make_plain_table(database_url: str) -> None:
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {PLAIN}, {INDEXED}")
        like = "LIKE billing_costrecord INCLUDING DEFAULTS INCLUDING IDENTITY"
        conn.execute(f"CREATE TABLE {PLAIN} ({like})")
        conn.execute(f"CREATE TABLE {INDEXED} (LIKE billing_costrecord INCLUDING ALL)")


def drop_tables(database_url: str) -> None:
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {PLAIN}, {INDEXED}")


# ------------------------------------------------------------------------- server


def server(database_url: str, workdir: Path) -> dict:
    """COPY FROM of the loaded rows, already in text format, into tables that differ
    only in their indexes and constraints; each timed to its commit."""
    import psycopg

    from billing.loader import LOAD_FIELDS

    columns = ", ".join(f'"{name}"' for name in LOAD_FIELDS)
    dump = workdir / "costrecord.copy"
    with psycopg.connect(database_url) as conn, conn.cursor() as cur:
        with (
            dump.open("wb") as out,
            cur.copy(f"COPY billing_costrecord ({columns}) TO STDOUT") as copy,
        ):
            for block in copy:
                out.write(block)
        rows = cur.execute("SELECT count(*) FROM billing_costrecord").fetchone()[0]
    results = {"rows": rows, "dump_mb": round(dump.stat().st_size / 1e6)}
    print(f"server side, {rows:,} rows ({results['dump_mb']} MB of COPY text):")
    with psycopg.connect(database_url) as conn:
        indexes = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes"
            " WHERE tablename = 'billing_costrecord'"
        ).fetchall()
    after = [
        definition.replace(
            " ON public.billing_costrecord ", f" ON public.{PLAIN} "
        ).replace(f"INDEX {name} ", f"INDEX {name}_after ")
        for name, definition in indexes
    ]
    deferred = "DEFERRABLE INITIALLY DEFERRED"
    fks = {
        column: f"ALTER TABLE {INDEXED} ADD FOREIGN KEY ({column}_id) "
        f"REFERENCES {table} (id) {deferred}"
        for column, table in (
            ("project", "projects_project"),
            ("training_run", "projects_trainingrun"),
            ("source", "billing_billingsource"),
            ("import_run", "billing_importrun"),
        )
    }
    targets = (
        ("unindexed, unconstrained clone", PLAIN, [], []),
        (f"same, then the {len(after)} indexes built after the load", PLAIN, [], after),
        (f"clone with the {len(after)} indexes (incl. PK), check constraint",
         INDEXED, [], []),
        ("same + deferred FKs on project, training_run", INDEXED,
         [fks["project"], fks["training_run"]], []),
        ("same + deferred FKs on all four (= billing_costrecord)", INDEXED,
         list(fks.values()), []),
        ("billing_costrecord itself, emptied", "billing_costrecord", [], []),
    )  # fmt: skip
    for label, table, setup, finish in targets:
        make_plain_table(database_url)
        with psycopg.connect(database_url, autocommit=True) as conn:
            for statement in setup:
                conn.execute(statement)
            if table == "billing_costrecord":
                conn.execute("DELETE FROM billing_dailycost")
                conn.execute("TRUNCATE billing_costrecord")
            conn.execute("CHECKPOINT")
        with psycopg.connect(database_url) as conn:
            started = time.perf_counter()
            with (
                conn.cursor() as cur,
                cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy,
                dump.open("rb") as data,
            ):
                while block := data.read(1 << 20):
                    copy.write(block)
            copied = time.perf_counter() - started
            for statement in finish:
                conn.execute(statement)
            conn.commit()
            total = time.perf_counter() - started
        results[label] = {"copy_s": round(copied, 2), "total_s": round(total, 2)}
        print(f"  {copied:7.2f} s COPY, {total:7.2f} s in all (commit)  {label}")
    dump.unlink()
    drop_tables(database_url)
    return results


# ------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modes", nargs="+", choices=("phases", "client", "server"))
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/spendtracker-bench"))
    parser.add_argument("--server-url", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--database", default="spendtracker_bench_profile")
    parser.add_argument("--app-dir", type=Path, default=BENCH_DIR.parent)
    parser.add_argument("--app-label", default="", help="see import_benchmark.py")
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument("--results", type=Path)
    args = parser.parse_args(argv)

    args.workdir.mkdir(parents=True, exist_ok=True)
    original = bench.data_file(args.workdir, args.rows)
    restated = bench.data_file(args.workdir, args.rows, restate=True)
    db = bench.Database(args.server_url, args.database)
    env = os.environ | {
        "DATABASE_URL": db.url,
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": "bench-only-secret-key",
    }
    import subprocess

    db.create()
    results: dict = {
        "rows": args.rows,
        "code": bench.code_version(args.app_dir, args.app_label),
    }
    try:
        for command in (
            ["migrate", "--noinput", "-v", "0"],
            ["shell", "-c", bench.SEED_CODE],
        ):
            subprocess.run(
                [sys.executable, "manage.py", *command],
                cwd=args.app_dir,
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
        django_setup(args.app_dir, db.url)
        from billing.loader import LOAD_FIELDS

        assert LOAD_FIELDS == EXPECTED_ORDER, LOAD_FIELDS  # the lean prototype's order
        if "phases" in args.modes:
            results["phases"] = phases(original, restated)
        if "client" in args.modes:
            results["client"] = client(original, db.url)
        if "server" in args.modes:
            if "phases" not in args.modes:
                from billing.services import billing_import_file

                billing_import_file(path=original, source_name="bench")
            results["server"] = server(db.url, args.workdir)
    finally:
        from django.db import connections

        connections.close_all()
        if not args.keep_db:
            db.drop()
    if args.results:
        args.results.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
