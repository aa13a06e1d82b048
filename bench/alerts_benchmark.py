"""Alert evaluation at scale (issue #4): 1,000 projects with 12 months of daily data.

In one process, on a database of its own, it seeds the organisation, then times:

- `alerts_evaluate` for everything, twice: the first pass fires, the second is the
  steady state an hourly run sees;
- the baseline: the same figures read project by project through the one-project
  services (`project_summary`, `run_summaries` of its runs), as an evaluator that
  loops over projects would.

Both count their SQL queries. Results go to stdout and, with --results, to JSON.

    .venv/bin/python bench/alerts_benchmark.py --projects 1000 \
        --results bench/results/DATE-alerts-benchmark.json
"""

import argparse
import io
import json
import os
import platform
import sys
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
SERVER = "postgres://postgres@127.0.0.1:5432"
AS_OF = date(2026, 11, 26)
NOW = datetime(2026, 11, 26, 9, tzinfo=UTC)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def recreate(name: str) -> None:
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)
            )
        )
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop(name: str) -> None:
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)
            )
        )


def setup_django(database: str) -> None:
    os.environ["DATABASE_URL"] = f"{SERVER}/{database}"
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-secret")
    os.environ.setdefault("DJANGO_DEBUG", "false")
    os.environ.setdefault("CELERY_BROKER_URL", "memory://")
    os.environ.setdefault(
        "FIELD_ENCRYPTION_KEY", "dGVzdHMtb25seS1rZXktMzItYnl0ZXMtbG9uZyEhISE="
    )
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "spendtracker.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def seed(projects: int) -> dict:
    """Teams, leads, projects with a 12-month plan and two runs, and a DailyCost row
    per project, run and day from January to today (COPY: seeding is not measured)."""
    from django.db import connection

    from accounts.models import Membership, Team, User
    from billing.models import BillingSource, DailyCost
    from budgets.models import Budget, BudgetLine
    from projects.models import Project, TrainingRun

    teams = [Team.objects.create(name=f"Team {i}", slug=f"team-{i}") for i in range(10)]
    leads = []
    for i, team in enumerate(teams):
        lead = User.objects.create_user(email=f"lead{i}@bench.example", password=None)
        Membership.objects.create(user=lead, team=team, role=Membership.Role.LEAD)
        leads.append(lead)
    finance = User.objects.create_user(
        email="finance@bench.example", password=None, role=User.Role.FINANCE
    )
    finance.watched_teams.set(teams)
    BillingSource.objects.create(
        name="bench", kind="focus", last_sync_at=NOW - timedelta(hours=3)
    )
    year = date(2026, 1, 1)
    created = Project.objects.bulk_create(
        Project(
            team=teams[i % 10],
            owner=leads[i % 10],
            name=f"Project {i:04d}",
            slug=f"project-{i:04d}",
            kind=Project.Kind.FINE_TUNING,
            start_date=year,
            end_date=date(2026, 12, 31),
        )
        for i in range(projects)
    )
    budgets = Budget.objects.bulk_create(
        Budget(
            project=p,
            total=Decimal("120000"),
            currency="USD",
            start_date=year,
            end_date=date(2026, 12, 31),
        )
        for p in created
    )
    BudgetLine.objects.bulk_create(
        BudgetLine(budget=b, month=date(2026, m, 1), amount=Decimal("10000"))
        for b in budgets
        for m in range(1, 13)
    )
    runs = TrainingRun.objects.bulk_create(
        TrainingRun(
            project=p,
            name=f"run-{k}",
            external_id=f"{p.slug}-run-{k}",
            gpu_type="H100",
            gpu_count=8,
            planned_gpu_hours=Decimal("1500"),
            rate_per_gpu_hour=Decimal("2.49"),
            start_date=date(2026, 1 + 5 * k, 1),
            end_date=date(2026, 5 + 5 * k, 28),
        )
        for p in created
        for k in range(2)
    )
    run_of = {(r.project_id, r.start_date.month): r.pk for r in runs}
    days = (AS_OF - year).days + 1
    buffer = io.StringIO()
    rows = 0
    for index, project in enumerate(created):
        # A third on plan, a third 20% over, a third 60% over; a spike now and then.
        daily = Decimal(10000 * 12) / 365 * Decimal(("1.0", "1.2", "1.6")[index % 3])
        for offset in range(days):
            day = year + timedelta(days=offset)
            amount = daily * (3 if (offset + index) % 97 == 0 else 1)
            run = run_of.get((project.pk, 1 if day.month <= 5 else 6))
            buffer.write(
                f"{day}\t{project.pk}\t{run or chr(92) + 'N'}\tAWS\tAmazon EC2\tUSD\t"
                f"1\tf\t{amount / Decimal('2.49'):.4f}\t"
                + "\t".join([f"{amount:.4f}"] * 4)
                + "\n"
            )
            rows += 1
    columns = (
        "date, project_id, training_run_id, provider_name, service_name, "
        "billing_currency, fx_rate, is_provisional, gpu_hours, billed_cost, "
        "effective_cost, list_cost, contracted_cost"
    )
    with connection.cursor() as cursor:
        with cursor.cursor.copy(
            f"COPY {DailyCost._meta.db_table} ({columns}) FROM STDIN"
        ) as copy:
            copy.write(buffer.getvalue())
        cursor.execute(f"ANALYZE {DailyCost._meta.db_table}")
    return {"projects": projects, "runs": len(runs), "daily_cost_rows": rows}


def measured(function) -> dict:
    """Wall time and the number of SQL statements sent (counted, not logged)."""
    from django.db import connection

    count = 0

    def counting(execute, sql, params, many, context):
        nonlocal count
        count += 1
        return execute(sql, params, many, context)

    with connection.execute_wrapper(counting):
        started = time.perf_counter()
        result = function()
        seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 3), "queries": count, "result": result}


def batch_evaluation() -> dict:
    from budgets.alerts import alerts_evaluate

    return alerts_evaluate(now=NOW, send_later=False).as_json()


def one_by_one() -> int:
    """The baseline: every project's figures through the one-project services."""
    from budgets.services import project_summary, run_summaries
    from projects.models import Project

    read = 0
    for project in Project.objects.all():
        project_summary(project=project, as_of=AS_OF)
        run_summaries(runs=project.runs.all(), as_of=AS_OF)
        read += 1
    return read


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--projects", type=int, default=1000)
    parser.add_argument("--database", default="spendtracker_alerts_bench")
    parser.add_argument("--results", type=Path)
    parser.add_argument("--keep-db", action="store_true")
    args = parser.parse_args(argv)

    recreate(args.database)
    try:
        setup_django(args.database)
        from django.core.management import call_command

        log("migrating")
        call_command("migrate", verbosity=0)
        log(f"seeding {args.projects} projects")
        seeded = seed(args.projects)
        log(f"seeded {seeded}")
        first = measured(batch_evaluation)
        log(f"first evaluation: {first}")
        steady = measured(batch_evaluation)
        log(f"steady evaluation: {steady}")
        baseline = measured(one_by_one)
        log(f"one by one: {baseline['seconds']} s, {baseline['queries']} queries")
    finally:
        if not args.keep_db:
            from django.db import connections

            connections.close_all()
            drop(args.database)
    results = {
        "benchmark": "alerts",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "seeded": seeded,
        "first_evaluation": first,
        "steady_evaluation": steady,
        "baseline_one_by_one": {k: v for k, v in baseline.items() if k != "result"},
        "ratio_baseline_to_steady": round(baseline["seconds"] / steady["seconds"], 2),
        "target_seconds": 10,
    }
    print(json.dumps(results, indent=2))
    if args.results:
        args.results.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
