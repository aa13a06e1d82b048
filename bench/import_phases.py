"""Where one `billing_import` spends its time: wall and this process's CPU per phase.

Runs the import in-process against DATABASE_URL (a migrated and seeded database, e.g.
one left by `import_benchmark.py --keep-db`), after emptying the application tables:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/spendtracker_bench \\
        .venv/bin/python bench/import_phases.py FILE [RESTATED_FILE]

With a restated file, FILE is imported first and the re-import is what is measured.

A phase whose CPU is close to its wall time is bound by Python; one whose server CPU
(the backend's, read from /proc: run it on the database's machine) is close to it is
bound by PostgreSQL.
"""

import os
import resource
import sys
import time
from pathlib import Path

APP_DIR = Path(__file__).resolve().parent.parent


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


SERVER_PID: list[int] = []  # the PostgreSQL backend serving this process


def process_cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process of this machine, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_cpu_seconds() -> float:
    """CPU time of this connection's PostgreSQL backend (same machine only)."""
    return process_cpu_seconds(SERVER_PID[0])


def main() -> None:
    sys.path.insert(0, str(APP_DIR))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "spendtracker.settings")
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-secret-key" * 3)
    started = time.perf_counter()
    import django

    django.setup()
    from django.db import connection

    from billing import loader, services

    print(f"Django set-up: {time.perf_counter() - started:.1f} s")
    phases: dict[str, list[float]] = {}

    def timed(module, name: str, label: str) -> None:
        function = getattr(module, name)

        def wrapper(*args, **kwargs):
            wall, cpu, server = time.perf_counter(), cpu_seconds(), server_cpu_seconds()
            try:
                return function(*args, **kwargs)
            finally:
                phase = phases.setdefault(label, [0.0, 0.0, 0.0])
                phase[0] += time.perf_counter() - wall
                phase[1] += cpu_seconds() - cpu
                phase[2] += server_cpu_seconds() - server

        setattr(module, name, wrapper)

    timed(services, "_sha256", "checksum")
    timed(services, "cost_records_load_file", "load (read, allocate, COPY)")
    timed(loader, "check_references", "key checks (part of the load)")
    timed(services, "_statistics_refresh", "ANALYZE")
    timed(services, "daily_costs_rebuild", "DailyCost rebuild")
    timed(services, "_cost_records_delete", "delete of the replaced rows")
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE billing_costrecord, billing_dailycost, billing_importrun CASCADE"
        )
        cursor.execute("CHECKPOINT")
        cursor.execute("SELECT pg_backend_pid()")
        SERVER_PID.append(cursor.fetchone()[0])
    if len(sys.argv) > 2:  # the restated file's import is the one measured
        services.billing_import_file(path=Path(sys.argv[1]), source_name="bench")
        phases.clear()
    wall, cpu, server = time.perf_counter(), cpu_seconds(), server_cpu_seconds()
    outcome = services.billing_import_file(path=Path(sys.argv[-1]), source_name="bench")
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    server = server_cpu_seconds() - server
    result = outcome.as_json()
    print(f"{result['status']}, {result['rows']:,} rows {result['error'] or ''}")
    print(f"{'phase':32s} {'wall':>8s} {'CPU':>8s} {'server CPU':>11s}")
    for label, (phase_wall, phase_cpu, phase_server) in {
        "import, all of it": (wall, cpu, server),
        **phases,
    }.items():
        print(
            f"{label:32s} {phase_wall:6.1f} s {phase_cpu:6.1f} s {phase_server:9.1f} s"
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process {peak:.0f} MB")


if __name__ == "__main__":
    main()
