"""Issue #3: time a full `billing_import` of a FOCUS 1.2 file against a raw COPY of it.

In one run, against a fresh PostgreSQL database this script creates and migrates:

1. generates the FOCUS 1.2 CSV of N rows and its restated twin (same billing period,
   amounts changed slightly) in a work directory, unless they are already there;
2. times a raw `COPY ... FROM STDIN (FORMAT csv, HEADER true)` of the file, streamed
   through psycopg 3 `cursor.copy()` in 1 MiB blocks, into `bench_raw_focus`: an
   ordinary (logged) table with one `text` column per CSV column, no index, no key,
   no constraint. The physical floor: the server parses the CSV and writes the rows;
3. times `manage.py billing_import FILE --source bench --json` as a separate process,
   with 50 tag allocation rules (project -> project, run tag training_run), 200 training
   runs and EUR rates in place; its peak RSS comes from os.wait4() on that very process
   (ru_maxrss), and its RSS is also sampled from /proc every 0.2 s;
4. times the import of the restated file (the same billing period replaced);
5. with --rows-large, imports a file of that many rows into an emptied database for the
   peak-memory comparison (and raw-COPYs it, for the time ratio at that size);

then prints, and writes as JSON, the ratios: import / COPY, reimport / import, peak MB
at N and at --rows-large and their ratio. A CHECKPOINT runs before every timed step,
and the file is read once beforehand, so every step starts with the file in the page
cache and no dirty buffers left by the step before. Other work on the machine skews
timings: each step first waits (up to --wait-quiet s) for the load average to drop
under 1, and records the load and the share of time tasks stalled for a CPU.

    .venv/bin/python bench/import_benchmark.py --rows 1000000 --rows-large 3000000
    .venv/bin/python bench/import_benchmark.py --rows 100000          # a quick run
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql

BENCH_DIR = Path(__file__).resolve().parent
BYTES_PER_ROW = 1100  # the generated file is about 1.01 KB per row; with margin
RAW_TABLE = "bench_raw_focus"
APP_TABLES = ("billing_costrecord", "billing_dailycost", "billing_importrun")

TARGETS = {
    "import_over_copy": 2.5,
    "reimport_over_import": 1.3,
    "peak_mb": 300,
    "peak_growth_large_over_base": 1.10,
}

SEED_CODE = """
from datetime import date, timedelta
from decimal import Decimal
from accounts.models import Team, User
from billing.models import FxRate
from projects.models import AllocationRule, Project, TrainingRun
owner = User.objects.create_user("bench@example.com", None, full_name="Bench")
teams = [Team.objects.create(name=f"Team {i}", slug=f"team-{i}") for i in range(8)]
for p in range(50):
    project = Project.objects.create(
        team=teams[p % 8], name=f"Project {p:03d}", slug=f"proj-{p:03d}", owner=owner,
        kind="pre_training", start_date=date(2026, 1, 1), end_date=date(2026, 12, 31))
    for r in range(4):
        TrainingRun.objects.create(
            project=project, name=f"Run {p}-{r}", external_id=f"run-{p:03d}-{r}",
            gpu_type="H100 80GB", gpu_count=8, planned_gpu_hours=Decimal("1000"),
            rate_per_gpu_hour=Decimal("2.5"), start_date=date(2026, 9, 1),
            end_date=date(2026, 12, 31))
    AllocationRule.objects.create(
        project=project, priority=100 + p, match_on="tag", tag_key="project",
        value=f"proj-{p:03d}", run_tag_key="training_run")
for day in range(31):
    FxRate.objects.create(currency="EUR", date=date(2026, 10, 1) + timedelta(days=day),
                          rate=Decimal("1.08") + Decimal(day) / 1000)
print(AllocationRule.objects.count(), TrainingRun.objects.count())
"""


# --------------------------------------------------------------------------- helpers


def log(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


def data_file(
    workdir: Path,
    rows: int,
    *,
    restate: bool = False,
    organisation: int = 0,
    seed: int | None = None,
) -> Path:
    """The generated file (generate_focus.py), made once and kept in `workdir`; an
    organisation other than 0, or a seed, names a file of its own."""
    name = f"focus12-{rows}{'-restated' if restate else ''}"
    if organisation or seed is not None:
        name += f"-org{organisation}-seed{seed}"
    path = workdir / f"{name}.csv"
    if not path.exists():
        log(f"generating {path.name}")
        started = time.perf_counter()
        command = [sys.executable, str(BENCH_DIR / "generate_focus.py")]
        command += ["--rows", str(rows), "--output", str(path)]
        command += ["--organisation", str(organisation)]
        command += ["--seed", str(seed)] if seed is not None else []
        subprocess.run(command + (["--restate"] if restate else []), check=True)
        seconds = time.perf_counter() - started
        log(f"  {path.stat().st_size / 1e6:,.0f} MB in {seconds:.1f} s")
    return path


def cpu_stall_us() -> int:
    """Microseconds, since boot, that some runnable task waited for a CPU (PSI)."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except OSError:
        return 0
    return int(line.rsplit("total=", 1)[1])


def wait_for_quiet(limit: float) -> dict:
    """Other work on this machine (test suites, other databases) skews every timing.
    Wait, up to `limit` seconds, until the 1-minute load average is under 1.0."""
    started = time.perf_counter()
    load = os.getloadavg()[0]
    while load >= 1.0 and time.perf_counter() - started < limit:
        time.sleep(5)
        load = os.getloadavg()[0]
    return {"waited_s": round(time.perf_counter() - started), "load1_at_start": load}


class Contention:
    """How busy the machine was while a step ran: load average and CPU stall share."""

    def __enter__(self) -> "Contention":
        self.stall, self.started = cpu_stall_us(), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        wall = time.perf_counter() - self.started
        self.report = {
            "load1_after": round(os.getloadavg()[0], 2),
            "cpu_stall_share": round((cpu_stall_us() - self.stall) / 1e6 / wall, 3),
        }


def warm(path: Path) -> None:
    """Read the file once so every timed step finds it in the page cache."""
    with path.open("rb") as stream:
        while stream.read(1 << 22):
            pass


class Database:
    def __init__(self, server_url: str, name: str) -> None:
        self.server_url, self.name = server_url.rstrip("/"), name
        self.url = f"{self.server_url}/{name}"

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(f"{self.server_url}/postgres", autocommit=True)

    def connect(self, autocommit: bool = False) -> psycopg.Connection:
        return psycopg.connect(self.url, autocommit=autocommit)

    def create(self) -> None:
        with self.admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(self.name))
            )
            conn.execute(
                sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name))
            )

    def drop(self, timeout_s: int = 300) -> None:
        """DROP DATABASE waits until every backend of the cluster has absorbed a
        signal barrier; a backend of another database idling inside COPY FROM STDIN
        never does. Give up after `timeout_s` rather than hang, and say so."""
        with self.admin() as conn:
            conn.execute(f"SET statement_timeout = '{timeout_s}s'")
            try:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(self.name)
                    )
                )
            except psycopg.errors.QueryCanceled:
                log(f"could not drop {self.name} within {timeout_s} s; drop it later")

    def execute(self, statement, params=None) -> list:
        with self.connect(autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if cur.description else []

    def checkpoint(self) -> None:
        self.execute("CHECKPOINT")

    def settings(self) -> dict:
        names = (
            "server_version",
            "shared_buffers",
            "work_mem",
            "maintenance_work_mem",
            "max_wal_size",
            "synchronous_commit",
            "fsync",
            "wal_level",
            "autovacuum",
        )
        return {name: self.execute(f"SHOW {name}")[0][0] for name in names}


def app_env(db: Database, **extra: str) -> dict[str, str]:
    """The environment of the application's processes, on the benchmark database."""
    return os.environ | {
        "DATABASE_URL": db.url,
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": os.environ.get(
            "DJANGO_SECRET_KEY", "bench-only-secret-key"
        ),
        "DJANGO_CONN_MAX_AGE": "0",
        "REPORTING_CURRENCY": "USD",
        **extra,
    }


def database_prepare(db: Database, app_dir: Path, env: dict) -> None:
    """A fresh database, migrated, with the allocation rules, runs and rates."""
    log(f"creating and migrating {db.name}")
    db.create()
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=app_dir,
        env=env,
        check=True,
    )
    subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", SEED_CODE],
        cwd=app_dir,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )


# --------------------------------------------------------------------------- steps


def raw_copy(db: Database, path: Path) -> dict:
    """COPY the CSV as it is into an unindexed table of text columns; seconds."""
    with path.open(encoding="utf-8", newline="") as stream:
        header = stream.readline().rstrip("\r\n").split(",")
    columns = sql.SQL(", ").join(
        sql.SQL("{} text").format(sql.Identifier(column)) for column in header
    )
    db.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(RAW_TABLE)))
    db.execute(
        sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(RAW_TABLE), columns)
    )
    db.checkpoint()
    statement = sql.SQL("COPY {} FROM STDIN (FORMAT csv, HEADER true)").format(
        sql.Identifier(RAW_TABLE)
    )
    with db.connect() as conn:
        started = time.perf_counter()
        with conn.cursor() as cur, cur.copy(statement) as copy, path.open("rb") as data:
            while block := data.read(1 << 20):
                copy.write(block)
        conn.commit()
        seconds = time.perf_counter() - started
    rows, size = db.execute(
        sql.SQL("SELECT count(*), pg_total_relation_size({}) FROM {}").format(
            sql.Literal(RAW_TABLE), sql.Identifier(RAW_TABLE)
        )
    )[0]
    db.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(RAW_TABLE)))
    return {"seconds": seconds, "rows": rows, "table_mb": size / 1e6}


class RssSampler(threading.Thread):
    """VmRSS of one process every `interval` seconds, as (seconds, MB)."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, float]] = []
        self.done = threading.Event()

    def run(self) -> None:
        started = time.perf_counter()
        status = Path(f"/proc/{self.pid}/status")
        while not self.done.is_set():
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        mb = int(line.split()[1]) / 1024
                        self.samples.append((time.perf_counter() - started, mb))
                        break
            except (FileNotFoundError, ProcessLookupError):
                break
            self.done.wait(self.interval)

    def timeline(self, buckets: int = 20) -> list[list[float]]:
        """The highest RSS in each of `buckets` equal slices of the run."""
        if not self.samples:
            return []
        end = self.samples[-1][0] or 1.0
        peaks: dict[int, float] = {}
        for moment, mb in self.samples:
            index = min(buckets - 1, int(moment / end * buckets))
            peaks[index] = max(peaks.get(index, 0.0), mb)
        return [
            [round(end * (i + 1) / buckets, 1), round(peaks[i], 1)]
            for i in sorted(peaks)
        ]


def billing_import(app_dir: Path, env: dict, path: Path, workdir: Path) -> dict:
    """Run `manage.py billing_import` as its own process; time, CPU and peak RSS."""
    command = [sys.executable, "manage.py", "billing_import", str(path)]
    command += ["--source", "bench", "--json"]
    out, err = workdir / "import.stdout", workdir / "import.stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        started = time.perf_counter()
        process = subprocess.Popen(
            command, cwd=app_dir, env=env, stdout=stdout, stderr=stderr
        )
        sampler = RssSampler(process.pid)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        sampler.done.set()
        sampler.join()
    if process.returncode != 0:
        raise SystemExit(
            f"billing_import failed ({process.returncode}): {err.read_text()[-3000:]}"
        )
    result = json.loads(out.read_text())
    if result["status"] != "imported":
        raise SystemExit(f"billing_import did not import: {result}")
    return {
        "seconds": seconds,
        "cpu_user_s": usage.ru_utime,
        "cpu_sys_s": usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,  # kilobytes on Linux
        "rss_timeline_mb": sampler.timeline(),
        "rows": result["rows"],
        "billing_periods": result["billing_periods"],
        "billed": result["billed"],
        "unallocated": result["unallocated"],
    }


def timed(args, step, path: Path, db: Database | None = None) -> dict:
    """Run one timed step from the same starting point: the machine quiet if it gets
    quiet within --wait-quiet seconds, the file in the page cache, a checkpoint."""
    quiet = wait_for_quiet(args.wait_quiet)
    warm(path)
    if db is not None:
        db.checkpoint()
    with Contention() as contention:
        result = step()
    result["machine"] = quiet | contention.report
    return result


def app_state(db: Database) -> dict:
    rows = db.execute(
        "SELECT (SELECT count(*) FROM billing_costrecord),"
        " (SELECT count(*) FROM billing_costrecord WHERE project_id IS NULL),"
        " (SELECT count(*) FROM billing_costrecord WHERE training_run_id IS NOT NULL),"
        " (SELECT count(*) FROM billing_dailycost),"
        " pg_total_relation_size('billing_costrecord')"
    )[0]
    keys = ("cost_records", "unallocated_records", "records_with_run", "daily_costs")
    return dict(zip(keys, rows[:4], strict=True)) | {
        "costrecord_total_mb": rows[4] / 1e6
    }


def empty_app_tables(db: Database) -> None:
    db.execute(f"TRUNCATE {', '.join(APP_TABLES)}")
    db.execute("VACUUM ANALYZE billing_costrecord")


def code_version(app_dir: Path, label: str = "") -> dict:
    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=app_dir, capture_output=True, text=True, check=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    return {
        # Which code ran, never a path of the machine (results are committed).
        "app_dir": "this checkout"
        if app_dir.resolve() == BENCH_DIR.parent
        else "another checkout (--app-dir)",
        "label": label,
        "commit": git("rev-parse", "HEAD"),
        "uncommitted_in_billing": git("status", "--porcelain", "--", "billing"),
    }


def machine() -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gib": round(memory, 1),
        "python": platform.python_version(),
        "psycopg": psycopg.__version__,
    }


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--rows-large", type=int, help="also measure peak memory at this many rows"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="COPY, import, reimport cycles at --rows"
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "spendtracker-bench",
        help="where the generated files go (kept between runs unless --clean)",
    )
    parser.add_argument(
        "--clean", action="store_true", help="delete the files at the end"
    )
    parser.add_argument("--server", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--database", default="spendtracker_bench")
    parser.add_argument(
        "--keep-db", action="store_true", help="do not drop the database"
    )
    parser.add_argument(
        "--app-dir",
        type=Path,
        default=BENCH_DIR.parent,
        help="the Spendtracker checkout whose manage.py runs the import",
    )
    parser.add_argument(
        "--app-label",
        default="",
        help="what --app-dir holds, when it is not a git checkout (e.g. a git archive)",
    )
    parser.add_argument("--results", type=Path, help="write the results JSON here too")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=180,
        help="before each timed step, wait up to this long for load average < 1",
    )
    args = parser.parse_args(argv)

    args.workdir.mkdir(parents=True, exist_ok=True)
    need = BYTES_PER_ROW * (2 * args.rows + (args.rows_large or 0))
    free = shutil.disk_usage(args.workdir).free
    if free < need * 1.5:
        raise SystemExit(
            f"{args.workdir}: {free / 1e9:.1f} GB free, need ~{need * 1.5 / 1e9:.1f}"
        )

    db = Database(args.server, args.database)
    env = app_env(db)
    results: dict = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "rows": args.rows,
        "rows_large": args.rows_large,
        "repeat": args.repeat,
        "machine": machine(),
        "code": code_version(args.app_dir, args.app_label),
        "raw_table": f"{RAW_TABLE}: ordinary logged table, one text column per CSV "
        "column, no index, key or constraint; COPY FROM STDIN (FORMAT csv, HEADER)",
        "cycles": [],
    }
    try:
        original = data_file(args.workdir, args.rows)
        restated = data_file(args.workdir, args.rows, restate=True)
        results["file_mb"] = original.stat().st_size / 1e6

        database_prepare(db, args.app_dir, env)
        results["postgres"] = db.settings()

        for cycle in range(args.repeat):
            empty_app_tables(db)  # every cycle starts from the same empty tables
            log(f"cycle {cycle + 1}/{args.repeat}: raw COPY of {args.rows:,} rows")
            copy = timed(args, lambda: raw_copy(db, original), original)
            log(f"  {copy['seconds']:.1f} s  {copy['machine']}")
            log("  billing_import")
            first = timed(
                args,
                lambda: billing_import(args.app_dir, env, original, args.workdir),
                original,
                db,
            )
            first["state_after"] = app_state(db)
            log(f"  {first['seconds']:.1f} s, {first['peak_rss_mb']:.0f} MB")
            log(f"  {first['machine']}")
            log("  billing_import of the restated file (same period)")
            again = timed(
                args,
                lambda: billing_import(args.app_dir, env, restated, args.workdir),
                restated,
                db,
            )
            again["state_after"] = app_state(db)
            log(f"  {again['seconds']:.1f} s, {again['peak_rss_mb']:.0f} MB")
            log(f"  {again['machine']}")
            results["cycles"].append({"copy": copy, "import": first, "reimport": again})

        if args.rows_large:
            large = data_file(args.workdir, args.rows_large)
            empty_app_tables(db)
            log(f"raw COPY of {args.rows_large:,} rows")
            large_copy = timed(args, lambda: raw_copy(db, large), large)
            log(f"  {large_copy['seconds']:.1f} s")
            log(f"billing_import of {args.rows_large:,} rows")
            large_import = timed(
                args,
                lambda: billing_import(args.app_dir, env, large, args.workdir),
                large,
                db,
            )
            large_import["state_after"] = app_state(db)
            seconds, peak = large_import["seconds"], large_import["peak_rss_mb"]
            log(f"  {seconds:.1f} s, peak {peak:.0f} MB  {large_import['machine']}")
            results["large"] = {"copy": large_copy, "import": large_import}
            if args.clean:
                large.unlink()
        results["summary"] = summarise(results)
        text = json.dumps(results, indent=2)
        (args.workdir / "results.json").write_text(text)
        if args.results:
            args.results.parent.mkdir(parents=True, exist_ok=True)
            args.results.write_text(text + "\n")
        print_summary(results)
    finally:
        if args.clean:
            for path in args.workdir.glob("focus12-*.csv"):
                path.unlink()
        if not args.keep_db:
            db.drop()
    return 0


def summarise(results: dict) -> dict:
    cycles = results["cycles"]
    copy = statistics.median(c["copy"]["seconds"] for c in cycles)
    first = statistics.median(c["import"]["seconds"] for c in cycles)
    again = statistics.median(c["reimport"]["seconds"] for c in cycles)
    peak = max(
        max(c["import"]["peak_rss_mb"], c["reimport"]["peak_rss_mb"]) for c in cycles
    )
    summary = {
        "copy_s": copy,
        "import_s": first,
        "reimport_s": again,
        "import_over_copy": first / copy,
        "reimport_over_import": again / first,
        "peak_mb": peak,
        "rows_per_s_import": results["rows"] / first,
        "rows_per_s_copy": results["rows"] / copy,
    }
    if "large" in results:
        large = results["large"]
        summary |= {
            "large_copy_s": large["copy"]["seconds"],
            "large_import_s": large["import"]["seconds"],
            "large_import_over_copy": large["import"]["seconds"]
            / large["copy"]["seconds"],
            "large_peak_mb": large["import"]["peak_rss_mb"],
            "peak_growth_large_over_base": large["import"]["peak_rss_mb"]
            / max(c["import"]["peak_rss_mb"] for c in cycles),
        }
    summary["targets"] = {
        "import_over_copy <= 2.5": summary["import_over_copy"]
        <= TARGETS["import_over_copy"],
        "reimport_over_import <= 1.3": summary["reimport_over_import"]
        <= TARGETS["reimport_over_import"],
        "peak_mb < 300": summary["peak_mb"] < TARGETS["peak_mb"]
        and summary.get("large_peak_mb", 0) < TARGETS["peak_mb"],
    }
    if "large" in results:
        summary["targets"]["peak_growth <= 1.10"] = (
            summary["peak_growth_large_over_base"]
            <= TARGETS["peak_growth_large_over_base"]
        )
    return summary


def print_summary(results: dict) -> None:
    s = results["summary"]
    print()
    rows, size, cycles = results["rows"], results["file_mb"], results["repeat"]
    print(f"rows {rows:,}  file {size:,.0f} MB  cycles {cycles}")
    for index, cycle in enumerate(results["cycles"], start=1):
        print(
            f"  cycle {index}: COPY {cycle['copy']['seconds']:.1f} s  "
            f"import {cycle['import']['seconds']:.1f} s "
            f"(cpu {cycle['import']['cpu_user_s']:.1f} s user, "
            f"peak {cycle['import']['peak_rss_mb']:.0f} MB)  "
            f"reimport {cycle['reimport']['seconds']:.1f} s "
            f"(peak {cycle['reimport']['peak_rss_mb']:.0f} MB)"
        )
    rate_copy, rate_import = s["rows_per_s_copy"], s["rows_per_s_import"]
    print(f"median raw COPY      {s['copy_s']:8.1f} s  ({rate_copy:,.0f} rows/s)")
    print(f"median import        {s['import_s']:8.1f} s  ({rate_import:,.0f} rows/s)")
    print(f"median reimport      {s['reimport_s']:8.1f} s")
    print(f"import / COPY        {s['import_over_copy']:8.2f}   (target <= 2.5)")
    print(f"reimport / import    {s['reimport_over_import']:8.2f}   (target <= 1.3)")
    print(f"peak RSS             {s['peak_mb']:8.0f} MB (target < 300)")
    if "large_peak_mb" in s:
        rows = results["rows_large"]
        print(
            f"at {rows:,} rows: COPY {s['large_copy_s']:.1f} s, import "
            f"{s['large_import_s']:.1f} s (x{s['large_import_over_copy']:.2f}), "
            f"peak {s['large_peak_mb']:.0f} MB"
        )
        print(
            f"peak {rows:,} / {results['rows']:,}  "
            f"{s['peak_growth_large_over_base']:6.3f}   (target <= 1.10)"
        )
    for target, met in s["targets"].items():
        print(f"  {'met   ' if met else 'MISSED'} {target}")


if __name__ == "__main__":
    sys.exit(main())
