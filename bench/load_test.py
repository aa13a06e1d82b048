"""Load test of the portal as production serves it (issue 12): gunicorn, 20 users.

On a database of its own it seeds the report benchmark's organisation (5 teams, 200
projects with 24 months of plan, the given number of cost records over thousands of
resources, rolled up), moves every plan a year further so the projects are live today
and evaluates the alerts. Then it serves the portal with gunicorn as the Dockerfile
does (DEBUG off, collected static files, 3 workers) on a loopback port and runs locust
headless against it: team leads and finance, signed in, reading the dashboard, a
project page, the alerts page and the API (bench/locustfile.py), first a warm-up that
is not counted, then the measured run.

The figures are locust's: requests per second and p50/p95/p99 per page, and failures.
The baseline, in the same run and server, is `/healthz`: what a request costs through
gunicorn, the middleware and one query, with no page behind it.

Needs locust, which the project does not: `.venv/bin/pip install -r
bench/requirements-load.lock` (pinned to agree with requirements-dev.lock).

    .venv/bin/python bench/load_test.py --results bench/results/DATE-load-test.json

--keep-db keeps the seeded database; --reuse-db measures it again without seeding.
"""

import argparse
import csv
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report_benchmark as seeding  # noqa: E402

ROOT = seeding.ROOT
TARGET_P95_MS = 250
EXTRA_MONTHS = 12
PAGES = ["dashboard", "project page", "alerts page", "API projects", "API variance"]


def production_env(database: str, port: int) -> dict[str, str]:
    """What gunicorn and this process are run with: production settings, no broker,
    emails kept in memory (none is sent by reading pages)."""
    return {
        **os.environ,
        "DATABASE_URL": f"{seeding.SERVER}/{database}",
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": "load-test-only-secret-key-of-some-length-0123456789",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "DJANGO_SECURE_COOKIES": "false",  # plain HTTP on loopback
        "CELERY_BROKER_URL": "memory://",
        "EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
        "FIELD_ENCRYPTION_KEY": "dGVzdHMtb25seS1rZXktMzItYnl0ZXMtbG9uZyEhISE=",
        "SITE_URL": f"http://127.0.0.1:{port}",
        "DJANGO_SETTINGS_MODULE": "spendtracker.settings",
    }


def extend_plans() -> None:
    """The seeded plans end in November 2026; move every project, budget and run a
    year on with a plan line for each new month, so that today's pages show live
    projects (spend stops at the seeded records' last day, as a late bill does)."""
    from budgets.models import Budget, BudgetLine
    from projects.models import Project

    end = date(2027, 11, 30)
    months = [seeding.month_after(date(2026, 11, 1))]
    while len(months) < EXTRA_MONTHS:
        months.append(seeding.month_after(months[-1]))
    Project.objects.update(end_date=end)
    budgets = list(Budget.objects.all())
    BudgetLine.objects.bulk_create(
        BudgetLine(budget=b, month=m, amount=Decimal("20000"))
        for b in budgets
        for m in months
    )
    Budget.objects.update(end_date=end, total=Decimal("20000") * (24 + EXTRA_MONTHS))


def prepare() -> dict:
    from budgets.alerts import alerts_evaluate

    extend_plans()
    outcome = alerts_evaluate(send_later=False).as_json()
    return {"alerts": outcome}


def sessions() -> dict[str, str]:
    """A signed-in session for each person of the locustfile, as a browser that
    logged in carries it: logging in is left out of the test, since its cost is the
    password hasher's by design (a fifth of a second of CPU here, on purpose)."""
    from django.conf import settings
    from django.test import Client

    from accounts.models import User

    cookies = {}
    for user in User.objects.filter(email__endswith="@bench.example"):
        client = Client()
        client.force_login(user)
        cookies[user.email] = client.cookies[settings.SESSION_COOKIE_NAME].value
    return cookies


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_up(url: str, server: subprocess.Popen, seconds: int = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"gunicorn stopped with exit code {server.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"gunicorn did not answer {url} within {seconds} s")


def locust(env: dict, host: str, users: int, seconds: int, prefix: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "locust",
            "--locustfile",
            str(ROOT / "bench" / "locustfile.py"),
            "--headless",
            "--users",
            str(users),
            "--spawn-rate",
            str(users),
            "--run-time",
            f"{seconds}s",
            "--host",
            host,
            "--csv",
            str(prefix),
            "--only-summary",
            "--loglevel",
            "WARNING",
        ],
        env=env,
        check=False,  # locust exits 1 when any request failed; the figures say so
    )


def figures(prefix: Path) -> dict:
    """Locust's own summary: per page and in all."""
    rows = {}
    with open(f"{prefix}_stats.csv", newline="") as stats:
        for row in csv.DictReader(stats):
            rows[row["Name"]] = {
                "requests": int(row["Request Count"]),
                "failures": int(row["Failure Count"]),
                "requests_per_s": round(float(row["Requests/s"]), 1),
                "p50_ms": int(float(row["50%"])),
                "p95_ms": int(float(row["95%"])),
                "p99_ms": int(float(row["99%"])),
            }
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--projects", type=int, default=200)
    parser.add_argument("--teams", type=int, default=5)
    parser.add_argument("--resources", type=int, default=5000)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--warm-up-seconds", type=int, default=15)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--database", default="spendtracker_load_bench")
    parser.add_argument("--results", type=Path)
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument("--reuse-db", action="store_true")
    args = parser.parse_args(argv)

    port = free_port()
    env = production_env(args.database, port)
    os.environ.update(env)
    seeded: dict = {"reused": args.reuse_db}
    if not args.reuse_db:
        seeding.recreate(args.database)
    seeding.setup_django(args.database)
    from django.core.management import call_command
    from django.db import connection

    try:
        seeding.log("migrating")  # a reused database too, to today's models
        call_command("migrate", verbosity=0)
        if not args.reuse_db:
            seeding.log(f"seeding {args.projects} projects in {args.teams} teams")
            organisation = seeding.seed_organisation(args.projects, args.teams)
            seeding.log(f"seeding {args.records:,} cost records")
            seeded["cost_records"] = seeding.seed_cost_records(
                args.records, args.resources, organisation
            )
            seeding.log("rolling up")
            seeding.roll_up()
            seeded.update(prepare())
        signed_in = sessions()
        connection.close()
        seeding.log("collecting static files")
        subprocess.run(
            [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
            cwd=ROOT,
            env=env,
            check=True,
        )
        host = f"http://127.0.0.1:{port}"
        seeding.log(f"gunicorn with {args.workers} workers on {host}")
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "spendtracker.wsgi:application",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(args.workers),
                "--worker-tmp-dir",
                "/dev/shm",
            ],
            cwd=ROOT,
            env=env,
        )
        load_env = {
            **env,
            "LOAD_SESSIONS": json.dumps(signed_in),
            "LOAD_TEAMS": str(args.teams),
            "LOAD_PROJECTS": str(args.projects),
        }
        try:
            wait_until_up(f"{host}/healthz", server)
            with tempfile.TemporaryDirectory() as scratch:
                seeding.log(f"warm-up: {args.users} users, {args.warm_up_seconds} s")
                locust(
                    load_env,
                    host,
                    args.users,
                    args.warm_up_seconds,
                    Path(scratch) / "w",
                )
                seeding.log(f"measured: {args.users} users, {args.seconds} s")
                locust(load_env, host, args.users, args.seconds, Path(scratch) / "m")
                measured = figures(Path(scratch) / "m")
        finally:
            server.terminate()
            server.wait(timeout=30)
    finally:
        connection.close()
        if not args.keep_db and not args.reuse_db:
            seeding.admin_execute(
                seeding.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    seeding.sql.Identifier(args.database)
                )
            )

    pages = {name: measured[name] for name in PAGES}
    worst_p95 = max(page["p95_ms"] for page in pages.values())
    baseline = measured["healthz (baseline)"]
    output = {
        "benchmark": "load",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "seeded": seeded,
        "server": f"gunicorn, {args.workers} workers, DEBUG off",
        "users": args.users,
        "seconds": args.seconds,
        "pages": pages,
        "baseline_healthz": baseline,
        "all_requests": measured["Aggregated"],
        "worst_page_p95_ms": worst_p95,
        "worst_page_p95_over_healthz_p95": round(
            worst_p95 / max(baseline["p95_ms"], 1), 1
        ),
        "target": {"p95_ms": TARGET_P95_MS, "errors": 0},
        "met": worst_p95 < TARGET_P95_MS and measured["Aggregated"]["failures"] == 0,
    }
    print(json.dumps(output, indent=2))
    print(f"\n{'page':<22}{'req/s':>8}{'p50':>7}{'p95':>7}{'p99':>7}{'errors':>8}")
    for name, page in {**pages, "healthz (baseline)": baseline}.items():
        print(
            f"{name:<22}{page['requests_per_s']:>8}{page['p50_ms']:>7}"
            f"{page['p95_ms']:>7}{page['p99_ms']:>7}{page['failures']:>8}"
        )
    if args.results:
        args.results.write_text(json.dumps(output, indent=2) + "\n")
    return 0 if output["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
