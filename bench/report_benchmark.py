"""Monthly report, cost explorer and exports at scale (issue 10).

On a database of its own, it seeds 5 teams, 200 projects with 24 months of plan, and
10,000,000 cost records over those 24 months (thousands of resources, a resource id
unique to each project, providers and services per project as real accounts have them,
a share in euros, some unallocated and provisional spend), rolls them up, then times in
this one process:

- the report page (`/reports/YYYY-MM/`) and its JSON, through Django's test client as
  finance: server time, median of --repeat requests;
- the cost explorer grouped by service over a quarter (median of --repeat);
- the XLSX and PDF exports of the month (median of 3);
- the baseline each is compared with: the same figures aggregated straight from the
  cost records (median of 3).

    .venv/bin/python bench/report_benchmark.py --records 10000000 \
        --results bench/results/DATE-report-benchmark.json

--keep-db keeps the seeded database; --reuse-db measures it again without seeding.
"""

import argparse
import json
import os
import random
import statistics
import sys
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import import_benchmark
import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
SERVER = "postgres://postgres@127.0.0.1:5432"
FIRST_MONTH = date(2024, 12, 1)
MONTHS = 24
REPORT_MONTH = date(2026, 10, 1)  # the 23rd month: a previous month and a full year
NOW = datetime(2026, 11, 20, 9, tzinfo=UTC)
PROVIDERS = {
    "AWS": ["Amazon EC2", "Amazon S3", "Amazon SageMaker", "AWS Data Transfer"],
    "Microsoft": ["Virtual Machines", "Storage", "Azure Machine Learning"],
    "Google Cloud": ["Compute Engine", "Cloud Storage", "Vertex AI"],
    "CoreWeave": ["GPU Compute", "Storage"],
    "Lambda": ["GPU Cloud"],
    "OpenAI": ["API"],
}
CATEGORIES = {
    "Amazon EC2": "Compute",
    "Amazon S3": "Storage",
    "Amazon SageMaker": "AI and Machine Learning",
    "AWS Data Transfer": "Networking",
    "Virtual Machines": "Compute",
    "Storage": "Storage",
    "Azure Machine Learning": "AI and Machine Learning",
    "Compute Engine": "Compute",
    "Cloud Storage": "Storage",
    "Vertex AI": "AI and Machine Learning",
    "GPU Compute": "Compute",
    "GPU Cloud": "Compute",
    "API": "AI and Machine Learning",
}
REGIONS = ["us-east-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-northeast-1"]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def admin_execute(statement: sql.Composable) -> None:
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
        admin.execute(statement)


def recreate(name: str) -> None:
    admin_execute(
        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    )
    admin_execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def setup_django(database: str) -> None:
    os.environ["DATABASE_URL"] = f"{SERVER}/{database}"
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-secret")
    os.environ.setdefault("DJANGO_DEBUG", "false")
    os.environ.setdefault("DJANGO_ALLOWED_HOSTS", "testserver")
    # Production answers over HTTPS; the test client's requests are not, and would be
    # redirected.
    os.environ.setdefault("DJANGO_SECURE_SSL_REDIRECT", "false")
    os.environ.setdefault("CELERY_BROKER_URL", "memory://")
    os.environ.setdefault(
        "FIELD_ENCRYPTION_KEY", "dGVzdHMtb25seS1rZXktMzItYnl0ZXMtbG9uZyEhISE="
    )
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "spendtracker.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.conf import settings

    # Production serves collected, hashed static files; this process has none.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {
            "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        },
    }


def month_after(month: date) -> date:
    return (month.replace(day=28) + timedelta(days=4)).replace(day=1)


def seed_organisation(projects: int, teams: int) -> dict:
    from accounts.models import Membership, Team, User
    from billing.models import BillingSource, FxRate
    from budgets.models import Budget, BudgetLine
    from projects.models import Project, TrainingRun

    made_teams = [
        Team.objects.create(name=f"Team {i}", slug=f"team-{i}") for i in range(teams)
    ]
    leads = []
    for i, team in enumerate(made_teams):
        lead = User.objects.create_user(email=f"lead{i}@bench.example", password=None)
        Membership.objects.create(user=lead, team=team, role=Membership.Role.LEAD)
        leads.append(lead)
    User.objects.create_user(
        email="finance@bench.example", password=None, role=User.Role.FINANCE
    )
    sources = [
        BillingSource.objects.create(name=name, kind="focus")
        for name in ("Cloud FOCUS", "GPU invoices", "Model APIs")
    ]
    end = date(2026, 11, 30)
    created = Project.objects.bulk_create(
        Project(
            team=made_teams[i % teams],
            owner=leads[i % teams],
            name=f"Project {i:03d}",
            slug=f"project-{i:03d}",
            kind=Project.Kind.FINE_TUNING,
            start_date=FIRST_MONTH,
            end_date=end,
        )
        for i in range(projects)
    )
    budgets = Budget.objects.bulk_create(
        Budget(
            project=p,
            total=Decimal("480000"),
            currency="USD",
            start_date=FIRST_MONTH,
            end_date=end,
            status=Budget.Status.APPROVED,
        )
        for p in created
    )
    months = [FIRST_MONTH]
    while len(months) < MONTHS:
        months.append(month_after(months[-1]))
    BudgetLine.objects.bulk_create(
        BudgetLine(budget=b, month=m, amount=Decimal("20000"))
        for b in budgets
        for m in months
    )
    runs = TrainingRun.objects.bulk_create(
        TrainingRun(
            project=p,
            name=f"run-{k}",
            external_id=f"{p.slug}-run-{k}",
            gpu_type="H100",
            gpu_count=8,
            planned_gpu_hours=Decimal("20000"),
            rate_per_gpu_hour=Decimal("2.49"),
            start_date=months[k * 12],
            end_date=months[k * 12 + 11] + timedelta(days=27),
        )
        for p in created
        for k in range(2)
    )
    day = FIRST_MONTH
    rates = []
    while day < end:
        rates.append(FxRate(currency="EUR", date=day, rate=Decimal("1.08")))
        day += timedelta(days=1)
    FxRate.objects.bulk_create(rates)
    return {
        "teams": teams,
        "projects": [p.pk for p in created],
        "runs": {(r.project_id, r.name): r.pk for r in runs},
        "sources": [s.pk for s in sources],
    }


def seed_cost_records(records: int, resources: int, seeded: dict) -> int:
    """COPY of generated FOCUS lines, hour by hour: each project keeps a few resources
    of one or two providers; a resource id is unique to its project."""
    from django.db import connection

    from billing.models import CostRecord

    generator = random.Random(20261120)
    projects = seeded["projects"]
    per_project = max(1, resources // len(projects))
    shapes = {}
    for index, project in enumerate(projects):
        providers = generator.sample(sorted(PROVIDERS), 2)
        shapes[project] = [
            (
                provider,
                service,
                f"arn:{provider.lower()}:{project}:{index}-{n}",
                "EUR" if provider == "Microsoft" else "USD",
            )
            for n in range(per_project)
            for provider in [providers[n % 2]]
            for service in [PROVIDERS[provider][n % len(PROVIDERS[provider])]]
        ]
    source_of = {p: seeded["sources"][i % 3] for i, p in enumerate(projects)}
    tags_of = {
        p: json.dumps({"project": f"project-{p}", "env": "prod"}) for p in projects
    }
    price = Decimal("2.4937")
    amounts = {
        q: (Decimal(q) * price).quantize(Decimal("0.00000001")) for q in range(1, 65)
    }
    hours = MONTHS * 730
    per_hour = records / hours
    fields = [
        "billed_cost", "effective_cost", "list_cost", "contracted_cost", "source_id",
        "billing_account_id", "billing_account_name", "sub_account_id",
        "sub_account_name", "billing_period_start", "billing_period_end",
        "charge_period_start", "charge_period_end", "charge_category", "charge_class",
        "charge_description", "charge_frequency", "billing_currency", "invoice_id",
        "provider_name", "publisher_name", "invoice_issuer_name", "service_name",
        "service_category", "region_id", "resource_id", "resource_name",
        "resource_type", "sku_id", "consumed_quantity", "consumed_unit", "tags",
        "is_provisional", "project_id", "training_run_id",
    ]  # fmt: skip
    table = CostRecord._meta.db_table
    copy_sql = f"COPY {table} ({', '.join(fields)}) FROM STDIN"
    written = 0
    start = datetime.combine(FIRST_MONTH, datetime.min.time(), tzinfo=UTC)
    provisional_from = datetime(2026, 11, 1, tzinfo=UTC)
    lines: list[str] = []
    owed = 0.0
    with connection.cursor() as cursor:
        for hour in range(hours):
            moment = start + timedelta(hours=hour)
            month_start = moment.replace(day=1, hour=0)
            period_end = datetime.combine(
                month_after(month_start.date()), datetime.min.time(), tzinfo=UTC
            )
            owed += per_hour
            count = int(owed)
            owed -= count
            for _ in range(count):
                project = generator.choice(projects)
                provider, service, resource, currency = generator.choice(
                    shapes[project]
                )
                allocated = generator.random() > 0.08
                gpu = service in ("GPU Compute", "GPU Cloud", "Amazon EC2")
                quantity = generator.randint(1, 64)
                amount = amounts[quantity]
                run = seeded["runs"].get(
                    (project, "run-0" if moment.year < 2026 else "run-1")
                )
                values = [
                    amount, amount, amount * Decimal("1.2"), amount,
                    source_of[project],
                    "123456789012", "Bench org", f"sub-{project % 17}", "",
                    month_start, period_end, moment, moment + timedelta(hours=1),
                    "Usage", "", "", "Usage-Based", currency,
                    "" if moment >= provisional_from else f"INV-{month_start:%Y%m}",
                    provider, provider, provider, service, CATEGORIES[service],
                    REGIONS[project % len(REGIONS)], resource, "", "", "",
                    quantity, "GPU-Hours" if gpu else "Hours",
                    tags_of[project],
                    "t" if moment >= provisional_from else "f",
                    project if allocated else None,
                    run if allocated and gpu else None,
                ]  # fmt: skip
                lines.append("\t".join(_text(value) for value in values))
            if len(lines) >= 200_000 or hour == hours - 1:
                with cursor.cursor.copy(copy_sql) as copy:
                    copy.write("\n".join(lines) + "\n")
                written += len(lines)
                lines.clear()
                if written % 1_000_000 < 200_000:
                    log(f"  {written:,} cost records")
        cursor.execute(f"ANALYZE {table}")
    return written


def _text(value: object) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def roll_up() -> float:
    from billing.services import daily_costs_rebuild

    started = time.perf_counter()
    month = FIRST_MONTH
    for _ in range(MONTHS):
        following = month_after(month)
        daily_costs_rebuild(start=month, end=following)
        month = following
    return time.perf_counter() - started


def timed(function, repeat: int) -> dict:
    """Wall time, and this process's CPU time: on a machine shared with others the
    CPU time says what the code costs when the wall time says how busy it was."""
    seconds = []
    cpu = []
    for _ in range(repeat):
        started = time.perf_counter()
        cpu_started = time.process_time()
        function()
        seconds.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
    return {
        "median_s": round(statistics.median(seconds), 4),
        "median_cpu_s": round(statistics.median(cpu), 4),
        "min_s": round(min(seconds), 4),
        "max_s": round(max(seconds), 4),
        "runs": repeat,
    }


def baseline_report_figures() -> dict:
    """The report's figures straight from the cost records: the month by project,
    the previous month and the year to date by project, by provider, by service
    category and by charge category, provisional and unallocated, and 12 months of
    totals; amounts converted with each day's rate."""
    from django.db import connection

    month = REPORT_MONTH
    end = month_after(month)
    previous = date(2026, 9, 1)
    year = month.replace(month=1)
    trend_start = date(2025, 11, 1)
    amount = (
        "CASE WHEN billing_currency = 'USD' THEN {col} ELSE {col} * "
        "(SELECT rate FROM billing_fxrate r WHERE r.currency = c.billing_currency "
        "AND r.date <= c.charge_period_start::date ORDER BY r.date DESC LIMIT 1) END"
    )
    effective = amount.format(col="effective_cost")
    billed = amount.format(col="billed_cost")
    queries = {
        "by_project": f"SELECT project_id, sum({effective}), sum({billed}) "
        "FROM billing_costrecord c WHERE charge_period_start >= %s "
        "AND charge_period_start < %s GROUP BY project_id",
        "previous_by_project": f"SELECT project_id, sum({effective}) "
        "FROM billing_costrecord c WHERE charge_period_start >= %s "
        "AND charge_period_start < %s GROUP BY project_id",
        "ytd_by_project": f"SELECT project_id, sum({effective}) "
        "FROM billing_costrecord c WHERE charge_period_start >= %s "
        "AND charge_period_start < %s GROUP BY project_id",
        "by_provider": f"SELECT provider_name, sum({effective}), sum({billed}), "
        "sum(consumed_quantity) FILTER (WHERE consumed_unit = 'GPU-Hours') "
        "FROM billing_costrecord c WHERE charge_period_start >= %s "
        "AND charge_period_start < %s GROUP BY provider_name",
        "by_service_category": f"SELECT service_category, sum({effective}) "
        "FROM billing_costrecord c WHERE charge_period_start >= %s "
        "AND charge_period_start < %s GROUP BY service_category",
        "by_charge_category": f"SELECT charge_category, sum({effective}) "
        "FROM billing_costrecord c WHERE charge_period_start >= %s "
        "AND charge_period_start < %s GROUP BY charge_category",
        "provisional_unallocated": f"SELECT is_provisional, project_id IS NULL, "
        f"sum({effective}) FROM billing_costrecord c WHERE charge_period_start >= %s "
        "AND charge_period_start < %s GROUP BY 1, 2",
        "trend": f"SELECT date_trunc('month', charge_period_start), sum({effective}) "
        "FROM billing_costrecord c WHERE charge_period_start >= %s "
        "AND charge_period_start < %s GROUP BY 1",
    }
    ranges = {
        "previous_by_project": (previous, month),
        "ytd_by_project": (year, end),
        "trend": (trend_start, end),
    }
    rows = {}
    with connection.cursor() as cursor:
        for name, query in queries.items():
            start, stop = ranges.get(name, (month, end))
            cursor.execute(query, [_utc(start), _utc(stop)])
            rows[name] = len(cursor.fetchall())
    return rows


def baseline_explorer_by_service() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT service_name, sum(effective_cost) FROM billing_costrecord "
            "WHERE charge_period_start >= %s AND charge_period_start < %s "
            "GROUP BY service_name",
            [_utc(date(2026, 7, 1)), _utc(date(2026, 10, 1))],
        )
        return len(cursor.fetchall())


def _utc(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), tzinfo=UTC)


def measure(repeat: int) -> dict:
    import time_machine
    from django.test import Client

    from accounts.models import Team, User
    from reports.services import monthly_report

    finance = User.objects.get(email="finance@bench.example")
    client = Client()
    client.force_login(finance)
    month = f"{REPORT_MONTH:%Y-%m}"
    results: dict = {}
    with time_machine.travel(NOW, tick=True):

        def page() -> None:
            response = client.get(f"/reports/{month}/")
            assert response.status_code == 200, response.status_code

        def report_json() -> None:
            response = client.get(f"/reports/{month}/report.json")
            assert response.status_code == 200, response.status_code

        page()  # warm the caches a first request fills (templates, URL resolver)
        results["report_page"] = timed(page, repeat)
        results["report_json"] = timed(report_json, repeat)
        results["baseline_report_from_cost_records"] = timed(baseline_report_figures, 3)
        results["explorer_by_service_quarter"] = _explorer(repeat)
        results["baseline_explorer_from_cost_records"] = timed(
            baseline_explorer_by_service, 3
        )
        report = monthly_report(
            month=REPORT_MONTH, teams=Team.objects.all(), whole_organisation=True
        )
        results.update(_exports(report))
    base = results["baseline_report_from_cost_records"]["median_s"]
    ratios = {
        "report_page_to_baseline": results["report_page"]["median_s"] / base,
        "report_json_to_baseline": results["report_json"]["median_s"] / base,
    }
    if "median_s" in results["explorer_by_service_quarter"]:
        ratios["explorer_to_baseline"] = (
            results["explorer_by_service_quarter"]["median_s"]
            / results["baseline_explorer_from_cost_records"]["median_s"]
        )
    for name in ("xlsx", "pdf"):
        if name in results:
            ratios[f"{name}_to_baseline"] = results[name]["median_s"] / base
    results["ratios"] = {name: round(value, 3) for name, value in ratios.items()}
    return results


def _explorer(repeat: int) -> dict:
    """The explorer page grouped by service over a quarter, as finance."""
    from django.test import Client
    from django.urls import NoReverseMatch, reverse

    from accounts.models import User

    try:
        url = reverse("cost_explorer")
    except NoReverseMatch:
        return {"skipped": "no cost explorer in this version"}
    client = Client()
    client.force_login(User.objects.get(email="finance@bench.example"))
    query = {"start": "2026-07-01", "end": "2026-09-30", "group_by": "service"}

    def explore() -> None:
        response = client.get(url, query)
        assert response.status_code == 200, response.status_code

    explore()
    return timed(explore, repeat)


def _exports(report) -> dict:
    try:
        from reports import exports
    except ImportError:
        return {}
    return {
        "xlsx": timed(lambda: exports.render_xlsx(report), 3),
        "pdf": timed(lambda: exports.render_pdf(report), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--projects", type=int, default=200)
    parser.add_argument("--teams", type=int, default=5)
    parser.add_argument("--resources", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--database", default="spendtracker_report_bench")
    parser.add_argument("--results", type=Path)
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument("--reuse-db", action="store_true")
    parser.add_argument(
        "--app-label",
        default="",
        help="which code ran, when this checkout is not a git one (a git archive)",
    )
    args = parser.parse_args(argv)
    load_before = os.getloadavg()

    seeded_info: dict = {"reused": args.reuse_db}
    if not args.reuse_db:
        recreate(args.database)
    setup_django(args.database)
    from django.core.management import call_command
    from django.db import connection

    try:
        if not args.reuse_db:
            log("migrating")
            call_command("migrate", verbosity=0)
            log(f"seeding {args.projects} projects in {args.teams} teams")
            seeded = seed_organisation(args.projects, args.teams)
            log(f"seeding {args.records:,} cost records")
            started = time.perf_counter()
            written = seed_cost_records(args.records, args.resources, seeded)
            log(f"seeded {written:,} in {time.perf_counter() - started:.0f} s")
            log("rolling up 24 months")
            rollup_seconds = roll_up()
            log(f"rolled up in {rollup_seconds:.0f} s")
            seeded_info.update(
                cost_records=written, rollup_seconds=round(rollup_seconds, 1)
            )
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
            cursor.execute("SELECT count(*) FROM billing_dailycost")
            seeded_info["daily_cost_rows"] = cursor.fetchone()[0]
            cursor.execute("SELECT count(*) FROM billing_costrecord")
            seeded_info["cost_records"] = cursor.fetchone()[0]
        # What a worker does after each import: reconcile the month with its records.
        from reports.checks import records_check_run

        started = time.perf_counter()
        records_check_run(REPORT_MONTH)
        seeded_info["records_check_seconds"] = round(time.perf_counter() - started, 2)
        log(f"measuring: {seeded_info}")
        results = measure(args.repeat)
    finally:
        connection.close()
        if not args.keep_db and not args.reuse_db:
            admin_execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(args.database)
                )
            )
    output = {
        "benchmark": "report",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "code": import_benchmark.code_version(ROOT, args.app_label),
        "machine": import_benchmark.machine(),
        # Other work on the machine: load averages (1, 5, 15 min) at start and end.
        "load_average": {"start": load_before, "end": os.getloadavg()},
        "report_month": f"{REPORT_MONTH:%Y-%m}",
        "seeded": seeded_info,
        "targets": {
            "report_page_and_json_median_s": 0.3,
            "explorer_by_service_quarter_median_s": 0.5,
            "xlsx_and_pdf_s": 5,
        },
        **results,
    }
    print(json.dumps(output, indent=2))
    if args.results:
        args.results.write_text(json.dumps(output, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
