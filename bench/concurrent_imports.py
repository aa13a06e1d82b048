"""Issue #11: two billing sources imported one after the other, and at once by two
Celery workers on the imports queue.

In one run, against a fresh PostgreSQL database this script creates, migrates and seeds
as `import_benchmark.py` does:

1. generates two FOCUS 1.2 files of N rows (`generate_focus.py`), one per source: each
   its own organisation's billing accounts (`--organisation`) and its own resources
   (`--seed`), so each imports as a source of its own;
2. *one after the other*: one Celery worker process (solo pool) on the imports queue,
   both uploads queued at once (`billing.tasks.import_upload`, routed by the project's
   CELERY_TASK_ROUTES): it imports one, then the other;
3. *together*: two Celery worker processes (solo pool) on the imports queue, both
   uploads queued at once: each takes one;
4. repeats steps 2 and 3 (`--repeat`), every step from empty tables, a checkpoint, the
   files in the page cache and the machine quiet if it gets quiet (`--wait-quiet`).

A step is timed from queueing the two imports to both ImportRuns finished (polled every
0.1 s). Every 0.1 s it also reads the CPU time of each worker process and of each
PostgreSQL backend of the benchmark database (from /proc: run it on the database's
machine), and which backends wait for a lock, so that the ratio can be read on a
machine with more cores. Each step then checks that each source ends exact: its import
ran, its cost records and its rollup rows count the file's rows and add up to the file's
own totals, per currency, to the last decimal.

    flock /tmp/bench.lock .venv/bin/python bench/concurrent_imports.py --rows 500000 \\
        --repeat 3 --results bench/results/2026-12-05-concurrent-imports.json
    .venv/bin/python bench/concurrent_imports.py --rows 20000 --repeat 1   # a quick run
"""

import argparse
import csv
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import import_benchmark as bench
from import_phases import process_cpu_seconds

TARGET = 0.8  # together / one after the other, on a 2-core machine
SOURCES = {"org-1": 1, "org-2": 2}  # source name: organisation (and seed) of its file
SAMPLE_EVERY = 0.1


# --------------------------------------------------------------------------- the files


def file_totals(path: Path) -> dict:
    """The file's rows and its billed and effective totals per currency, as exact
    decimals (strings); read once and kept beside the file."""
    kept = path.with_suffix(".totals.json")
    if kept.exists():
        return json.loads(kept.read_text())
    rows, sums = 0, defaultdict(lambda: [Decimal(0), Decimal(0)])
    with path.open(encoding="utf-8", newline="") as stream:
        for line in csv.DictReader(stream):
            rows += 1
            currency = sums[line["BillingCurrency"]]
            currency[0] += Decimal(line["BilledCost"])
            currency[1] += Decimal(line["EffectiveCost"])
    totals = {
        "rows": rows,
        "currencies": {c: [str(b), str(e)] for c, (b, e) in sorted(sums.items())},
    }
    kept.write_text(json.dumps(totals))
    return totals


# --------------------------------------------------------------------------- measuring


@dataclass
class CpuUse:
    """CPU seconds of a set of processes between two moments, from /proc."""

    start: dict[int, float] = field(default_factory=dict)
    last: dict[int, float] = field(default_factory=dict)

    def see(self, pid: int, *, baseline: bool = False) -> None:
        try:
            seconds = process_cpu_seconds(pid)
        except (FileNotFoundError, ProcessLookupError):
            return  # ended since: its last reading stands
        if baseline:
            self.start.setdefault(pid, seconds)
        self.last[pid] = seconds

    def seconds(self) -> dict[int, float]:
        """Each process's CPU since the baseline, or since it started if later."""
        return {
            pid: round(last - self.start.get(pid, 0.0), 2)
            for pid, last in self.last.items()
        }


class Monitor(threading.Thread):
    """Every SAMPLE_EVERY seconds: the CPU of the workers and of the benchmark
    database's backends, and how long each backend waited for a lock (and which)."""

    def __init__(self, db: bench.Database, worker_pids: list[int]) -> None:
        super().__init__(daemon=True)
        self.db, self.worker_pids = db, worker_pids
        self.workers, self.backends = CpuUse(), CpuUse()
        self.lock_waits: dict[int, dict[str, float]] = defaultdict(dict)
        self.done = threading.Event()
        self.connection = db.connect(autocommit=True)
        self.own_pid = self.connection.info.backend_pid
        for pid in worker_pids:
            self.workers.see(pid, baseline=True)
        for pid, *_ in self.activity():
            self.backends.see(pid, baseline=True)

    def activity(self) -> list[tuple]:
        """Each backend of the database, what it waits for, and, when it waits for a
        lock, the lock: its table (or advisory key) and mode."""
        return self.connection.execute(
            "SELECT a.pid, a.wait_event_type,"
            " concat_ws(' ', a.wait_event, l.relation::regclass::text,"
            "  CASE WHEN l.locktype = 'advisory' THEN l.objid::text END, l.mode)"
            " FROM pg_stat_activity a"
            " LEFT JOIN pg_locks l ON l.pid = a.pid AND NOT l.granted"
            " WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()"
        ).fetchall()

    def run(self) -> None:
        while not self.done.wait(SAMPLE_EVERY):
            self.sample()

    def sample(self) -> None:
        for pid in self.worker_pids:
            self.workers.see(pid)
        for pid, wait_type, wait_event in self.activity():
            self.backends.see(pid)
            if wait_type == "Lock":
                waits = self.lock_waits[pid]
                waits[wait_event] = waits.get(wait_event, 0.0) + SAMPLE_EVERY

    def stop(self) -> dict:
        self.done.set()
        self.join()
        self.sample()
        self.connection.close()
        return {
            "workers_cpu_s": self.workers.seconds(),
            "postgres_backends_cpu_s": self.backends.seconds(),
            "lock_wait_s": {
                pid: {event: round(s, 1) for event, s in waits.items()}
                for pid, waits in self.lock_waits.items()
            },
        }


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy since boot (all cores, /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    busy = user + nice + system + irq + softirq + steal
    return busy / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- workers


class ImportWorker:
    """A Celery worker process of the project on the imports queue, solo pool."""

    def __init__(self, name: str, app_dir: Path, env: dict, workdir: Path) -> None:
        self.name, self.log = name, workdir / f"worker-{name}.log"
        command = [
            sys.executable, "-m", "celery", "-A", "spendtracker", "worker",
            "--queues", "imports", "--pool", "solo", "--hostname", f"{name}@bench",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            "--loglevel", "INFO",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command,
            cwd=app_dir,
            env=env,
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while "ready." not in self.log.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"worker {self.name} did not start: {self.log}")
            time.sleep(0.2)

    def tasks_received(self) -> int:
        lines = self.log.read_text().splitlines()
        return sum("import_upload[" in line and "received" in line for line in lines)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# --------------------------------------------------------------------------- one step


def purge_queues() -> None:
    """Empty the imports and the default queue of the benchmark's broker: the
    imports queue evaluations and report checks there, which no worker here runs."""
    from django.conf import settings

    from spendtracker.celery import app

    with app.connection_for_write() as broker:
        for queue in (settings.CELERY_TASK_DEFAULT_QUEUE, settings.IMPORTS_QUEUE):
            broker.default_channel.queue_purge(queue)


def import_runs(files: dict[str, Path], workdir: Path) -> list:
    """One ImportRun per source, its upload the source's file (in the media root), as
    the portal leaves it for the worker."""
    from billing.models import BillingSource, ImportRun

    runs = []
    for name, path in files.items():
        source, _ = BillingSource.objects.get_or_create(
            name=name, defaults={"kind": BillingSource.Kind.FOCUS}
        )
        run = ImportRun(source=source, source_name=name, file_name=path.name)
        run.upload.name = str(path.relative_to(workdir))
        run.save()
        runs.append(run)
    return runs


def exactness(files: dict[str, Path]) -> dict:
    """Per source: its run, its cost records and its rollup against the file."""
    from django.db.models import Count, Sum

    from billing.models import CostRecord, DailyCost, ImportRun

    report = {}
    for name, path in files.items():
        expected = file_totals(path)
        run = ImportRun.objects.filter(source_name=name).latest("pk")
        records = {
            row["billing_currency"]: row
            for row in CostRecord.objects.filter(source__name=name)
            .values("billing_currency")
            .annotate(n=Count("pk"), billed=Sum("billed_cost"))
            .annotate(effective=Sum("effective_cost"))
        }
        rollup = {
            row["billing_currency"]: row
            for row in DailyCost.objects.filter(source__name=name)
            .values("billing_currency")
            .annotate(n=Sum("cost_lines"), billed=Sum("billed_in_billing_currency"))
            .annotate(effective=Sum("effective_in_billing_currency"))
        }
        checks = {
            "imported": run.status == ImportRun.Status.IMPORTED,
            "run_rows": run.rows_loaded == expected["rows"],
        }
        for label, found in (("records", records), ("rollup", rollup)):
            checks[f"{label}_rows"] = (
                sum(row["n"] for row in found.values()) == expected["rows"]
            )
            checks[f"{label}_totals"] = {  # Decimals: equal whatever their places
                currency: (row["billed"], row["effective"])
                for currency, row in found.items()
            } == {
                currency: (Decimal(billed), Decimal(effective))
                for currency, (billed, effective) in expected["currencies"].items()
            }
        report[name] = {"status": run.status, "error": run.error, "checks": checks}
    return report


def step(args, db, env, files: dict[str, Path], workers: int) -> dict:
    """Both imports queued at once, for `workers` worker processes; timed until both
    are finished, then checked."""
    from billing.models import ImportRun
    from billing.tasks import import_upload

    bench.empty_app_tables(db)
    purge_queues()
    quiet = bench.wait_for_quiet(args.wait_quiet)
    for path in files.values():
        bench.warm(path)
    db.checkpoint()
    started = [
        ImportWorker(f"import{n + 1}", args.app_dir, env, args.workdir)
        for n in range(workers)
    ]
    try:
        for worker in started:
            worker.wait_ready()
        runs = import_runs(files, args.workdir)
        monitor = Monitor(db, [worker.process.pid for worker in started])
        busy = machine_busy_seconds()
        monitor.start()
        with bench.Contention() as contention:
            began = time.perf_counter()
            for run in runs:
                import_upload.delay(run.pk)
            pending = ImportRun.objects.filter(
                pk__in=[run.pk for run in runs], status=ImportRun.Status.RUNNING
            )
            while pending.exists():
                if time.perf_counter() - began > args.timeout:
                    raise SystemExit(f"the imports took over {args.timeout} s")
                time.sleep(SAMPLE_EVERY)
            seconds = time.perf_counter() - began
        use = monitor.stop()
        machine_busy = machine_busy_seconds() - busy
    finally:
        for worker in started:
            worker.stop()
    finished = {
        run.source_name: round((run.finished_at - run.started_at).total_seconds(), 1)
        for run in ImportRun.objects.filter(pk__in=[run.pk for run in runs])
    }
    checks = exactness(files)
    use["workers_cpu_s"] = {
        worker.name: use["workers_cpu_s"][worker.process.pid] for worker in started
    }
    result = {
        "workers": workers,
        "seconds": round(seconds, 2),
        "each_import_until_finished_s": finished,
        "tasks_per_worker": {w.name: w.tasks_received() for w in started},
        **use,
        "workers_cpu_total_s": round(sum(use["workers_cpu_s"].values()), 1),
        "postgres_cpu_total_s": round(sum(use["postgres_backends_cpu_s"].values()), 1),
        "machine_busy_cpu_s": round(machine_busy, 1),
        "exact": checks,
        "machine": quiet | contention.report,
    }
    failed = [
        f"{name}: {check}"
        for name, source in checks.items()
        for check, ok in source["checks"].items()
        if not ok
    ]
    if failed:
        raise SystemExit(f"not exact: {failed}; {checks}")
    if workers > 1 and sorted(result["tasks_per_worker"].values()) != [1] * workers:
        raise SystemExit(f"a worker took both imports: {result['tasks_per_worker']}")
    return result


# --------------------------------------------------------------------------- main


def django_setup(app_dir: Path, env: dict) -> None:
    """This process drives the benchmark through the project itself: the same models
    and the same task, routed by the project's settings."""
    os.environ.update(env)
    sys.path.insert(0, str(app_dir))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "spendtracker.settings")
    import django

    django.setup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=500_000, help="rows per source")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "spendtracker-bench",
        help="where the generated files go (kept between runs)",
    )
    parser.add_argument("--server", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--database", default="spendtracker_bench_concurrent")
    parser.add_argument(
        "--broker",
        default=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"),
        help="a Redis database the benchmark may purge the imports and default "
        "queues of",
    )
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument("--app-dir", type=Path, default=bench.BENCH_DIR.parent)
    parser.add_argument("--results", type=Path, help="write the results JSON here")
    parser.add_argument("--wait-quiet", type=float, default=180)
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args(argv)

    args.workdir.mkdir(parents=True, exist_ok=True)
    db = bench.Database(args.server, args.database)
    # Workers keep their connection (and so their backend, whose CPU is read) for
    # the whole step; the upload is the generated file, under the work directory.
    env = bench.app_env(
        db,
        CELERY_BROKER_URL=args.broker,
        DJANGO_MEDIA_ROOT=str(args.workdir),
        DJANGO_CONN_MAX_AGE="3600",
    )
    results: dict = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "rows_per_source": args.rows,
        "repeat": args.repeat,
        "machine": bench.machine(),
        "code": bench.code_version(args.app_dir),
        "steps": [],
    }
    files = {
        name: bench.data_file(
            args.workdir, args.rows, organisation=organisation, seed=organisation
        )
        for name, organisation in SOURCES.items()
    }
    results["files"] = {
        name: {"file": path.name, "mb": round(path.stat().st_size / 1e6)}
        | file_totals(path)
        for name, path in files.items()
    }
    try:
        bench.database_prepare(db, args.app_dir, env)
        results["postgres"] = db.settings()
        django_setup(args.app_dir, env)
        for cycle in range(args.repeat):
            for workers, label in ((1, "one after the other"), (2, "together")):
                bench.log(f"cycle {cycle + 1}/{args.repeat}: {label}")
                result = step(args, db, env, files, workers)
                bench.log(
                    f"  {result['seconds']:.1f} s; workers' CPU "
                    f"{result['workers_cpu_total_s']} s, PostgreSQL's "
                    f"{result['postgres_cpu_total_s']} s; {result['machine']}"
                )
                results["steps"].append(result)
        results["summary"] = summarise(results["steps"])
        text = json.dumps(results, indent=2)
        (args.workdir / "concurrent-results.json").write_text(text)
        if args.results:
            args.results.parent.mkdir(parents=True, exist_ok=True)
            args.results.write_text(text + "\n")
        print_summary(results)
    finally:
        if not args.keep_db:
            db.drop()
    return 0


def summarise(steps: list[dict]) -> dict:
    def median(workers: int, key: str) -> float:
        return statistics.median(s[key] for s in steps if s["workers"] == workers)

    alone, together = median(1, "seconds"), median(2, "seconds")
    ratios = [
        t["seconds"] / s["seconds"]
        for s, t in zip(steps[::2], steps[1::2], strict=True)
    ]
    return {
        "one_after_the_other_s": alone,
        "together_s": together,
        "together_over_one_after_the_other": round(together / alone, 3),
        "ratio_per_cycle": [round(r, 3) for r in ratios],
        "cpu_s": {
            label: {
                "workers": median(workers, "workers_cpu_total_s"),
                "postgres": median(workers, "postgres_cpu_total_s"),
                "machine": median(workers, "machine_busy_cpu_s"),
            }
            for workers, label in ((1, "one_after_the_other"), (2, "together"))
        },
        f"target <= {TARGET}": together / alone <= TARGET,
    }


def print_summary(results: dict) -> None:
    s = results["summary"]
    print()
    print(f"{results['rows_per_source']:,} rows per source, {results['repeat']} cycles")
    for step_result in results["steps"]:
        print(
            f"  {step_result['workers']} worker(s): {step_result['seconds']:6.1f} s  "
            f"workers {step_result['workers_cpu_total_s']:5.1f} s CPU  "
            f"PostgreSQL {step_result['postgres_cpu_total_s']:5.1f} s CPU  "
            f"machine {step_result['machine_busy_cpu_s']:5.1f} s  "
            f"lock waits {step_result['lock_wait_s']}"
        )
    print(f"median one after the other {s['one_after_the_other_s']:7.1f} s")
    print(f"median together            {s['together_s']:7.1f} s")
    print(
        f"together / one after other {s['together_over_one_after_the_other']:7.3f}"
        f"   (target <= {TARGET})  per cycle {s['ratio_per_cycle']}"
    )


if __name__ == "__main__":
    sys.exit(main())
