"""Back up the database with pg_dump, restore the dump into a new database with
pg_restore, and compare the two: every project's figures (budget, plan and actual to
date, the month's actual, forecast, status) and the rows of every table. The restore
is good when nothing differs; the restored database is dropped at the end.

    DATABASE_URL=postgres://... .venv/bin/python scripts/backup_restore_check.py \
        [--dump PATH] [--as-of YYYY-MM-DD] [--pg-dump-option OPTION ...]

`--dump` keeps the dump (`pg_dump --format=custom`, what `pg_restore` reads) at PATH;
`--pg-dump-option` passes an option to pg_dump. Needs pg_dump and pg_restore of the
server's major version, and the right to create a database. Exit status 0 when the
restore holds the same figures, 1 when any differ (each is printed).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from datetime import UTC, date, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

ROOT = Path(__file__).resolve().parents[1]

# Run by this interpreter in a process of its own per database, with DATABASE_URL set.
FIGURES = """
import json, sys
from datetime import date
import django
django.setup()
from django.apps import apps
from django.db import connection
from budgets.services import project_summaries
from projects.models import Project

as_of = date.fromisoformat(sys.argv[1])
figures = {}
projects = Project.objects.order_by("slug")
for summary in project_summaries(projects=projects, as_of=as_of):
    variance = summary.variance
    figures[f"project {summary.project.slug}"] = {
        "status": summary.status,
        "month_actual": str(summary.month_actual),
        "provisional": str(summary.provisional),
        **({
            "budget": str(variance.total),
            "plan_to_date": str(variance.plan_to_date),
            "actual_to_date": str(variance.actual_to_date),
            "forecast": str(variance.forecast),
        } if variance else {}),
    }
with connection.cursor() as cursor:
    for model in apps.get_models():
        table = model._meta.db_table
        cursor.execute(
            "SELECT count(*), "
            "md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) "
            f'FROM "{table}" t'
        )
        count, digest = cursor.fetchone()
        figures[f"table {table}"] = {"rows": count, "md5": digest}
json.dump(figures, sys.stdout)
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dump", type=Path, help="keep the dump at this path")
    parser.add_argument(
        "--as-of", type=date.fromisoformat, default=datetime.now(UTC).date()
    )
    parser.add_argument("--pg-dump-option", action="append", default=[])
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        print("DATABASE_URL must name a PostgreSQL database", file=sys.stderr)
        return 2
    restored_url, restored_name = _restored(url)
    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
    with tempfile.TemporaryDirectory() as folder:
        dump = args.dump or Path(folder) / "spendtracker.dump"
        _run("pg_dump", "--format=custom", f"--file={dump}", *args.pg_dump_option, url)
        _admin(url, drop, restored_name)
        _admin(url, sql.SQL("CREATE DATABASE {}"), restored_name)
        try:
            _run("pg_restore", "--no-owner", f"--dbname={restored_url}", str(dump))
            before, after = (
                _figures(url, args.as_of),
                _figures(restored_url, args.as_of),
            )
        finally:
            _admin(
                url, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)"), restored_name
            )
    differing = sorted(
        name
        for name in before.keys() | after.keys()
        if before.get(name) != after.get(name)
    )
    for name in differing:
        print(
            f"DIFFERS {name}: backed up {before.get(name)}, restored {after.get(name)}"
        )
    projects = sum(name.startswith("project ") for name in before)
    tables = sum(name.startswith("table ") for name in before)
    verdict = "differs" if differing else "is the same"
    print(f"{projects} projects and {tables} tables compared: the restore {verdict}")
    return 1 if differing else 0


def _restored(url: str) -> tuple[str, str]:
    """The URL and name of the database the dump is restored into."""
    parts = urlsplit(url)
    name = f"{parts.path.lstrip('/')}_restore_check"
    return urlunsplit(parts._replace(path=f"/{name}")), name


def _admin(url: str, statement: sql.SQL, name: str) -> None:
    with psycopg.connect(make_conninfo(url, dbname="postgres"), autocommit=True) as db:
        db.execute(statement.format(sql.Identifier(name)))


def _run(*command: str) -> None:
    subprocess.run(command, check=True)


def _figures(url: str, as_of: date) -> dict:
    environment = {**os.environ, "DATABASE_URL": url}
    environment.setdefault("DJANGO_SETTINGS_MODULE", "spendtracker.settings")
    result = subprocess.run(
        [sys.executable, "-c", FIGURES, as_of.isoformat()],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
    )
    if result.returncode:
        raise SystemExit(f"reading the figures of {url} failed:\n{result.stderr}")
    return json.loads(result.stdout)


if __name__ == "__main__":
    sys.exit(main())
