"""`manage.py monthly_report`: the whole organisation's report, in any format, to a
file or (text formats) to stdout; every mistake stops it with a message."""

import csv
import io
import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from openpyxl import load_workbook
from pypdf import PdfReader

from accounts.models import Team
from reports.exports import render_journal, render_json
from reports.services import monthly_report

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
FEBRUARY = date(2026, 2, 1)


@pytest.fixture(autouse=True)
def in_march(time_machine):
    time_machine.move_to(datetime(2026, 3, 10, 9, tzinfo=UTC), tick=False)


def finance_report():
    return monthly_report(
        month=FEBRUARY, teams=Team.objects.all(), whole_organisation=True
    )


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("monthly_report", *args, stdout=out)
    return out.getvalue()


def test_it_writes_the_whole_organisations_report_in_each_format(
    world, february, tmp_path
):
    for fmt in ("csv", "xlsx", "pdf", "json", "journal"):
        path = tmp_path / f"february.{fmt}"
        said = run("--month", "2026-02", "--format", fmt, "--output", str(path))
        assert said.startswith(f"Wrote the February 2026 report ({fmt}, ")
        assert str(path) in said
    data = json.loads((tmp_path / "february.json").read_text())
    assert data == json.loads(render_json(finance_report()))
    assert Decimal(data["unallocated"]["effective"]) == Decimal("60")
    assert {t["slug"] for t in data["teams"]} == {"foundation", "other"}
    book = load_workbook(tmp_path / "february.xlsx")
    assert "Projects" in book.sheetnames
    pdf = PdfReader(tmp_path / "february.pdf")
    assert "February 2026" in pdf.pages[0].extract_text()
    rows = list(csv.reader((tmp_path / "february.csv").open()))
    assert rows[0][0].startswith("Spendtracker monthly report, February 2026")
    assert (tmp_path / "february.journal").read_bytes() == render_journal(
        finance_report()
    )


@pytest.mark.parametrize("fmt", ["csv", "json", "journal"])
def test_a_dash_prints_a_text_format_on_stdout(world, february, fmt):
    printed = run("--month", "2026-02", "--format", fmt, "--output", "-")
    if fmt == "json":
        assert json.loads(printed) == json.loads(render_json(finance_report()))
    elif fmt == "journal":
        assert printed.encode() == render_journal(finance_report())
    else:
        assert printed.startswith('"Spendtracker monthly report, February 2026')


@pytest.mark.parametrize("fmt", ["xlsx", "pdf"])
def test_a_binary_format_is_refused_on_stdout(world, fmt):
    with pytest.raises(CommandError, match=f"--format {fmt} is binary"):
        run("--month", "2026-02", "--format", fmt, "--output", "-")


@pytest.mark.parametrize(
    ("month", "message"),
    [
        ("2026-13", "--month must be YYYY-MM, got '2026-13': no such month"),
        ("2026-2", "--month must be YYYY-MM, got '2026-2'"),
        ("February", "--month must be YYYY-MM, got 'February'"),
        ("2026-04", "2026-04 has not begun"),
    ],
)
def test_a_bad_month_is_refused_with_the_reason(world, tmp_path, month, message):
    path = tmp_path / "report.csv"
    with pytest.raises(CommandError, match=message):
        run("--month", month, "--format", "csv", "--output", str(path))
    assert not path.exists()


def test_an_unwritable_path_is_refused_with_the_reason(world, february, tmp_path):
    path = tmp_path / "no-such-folder" / "report.pdf"
    with pytest.raises(CommandError, match=f"cannot write {path}: No such file"):
        run("--month", "2026-02", "--format", "pdf", "--output", str(path))


def test_an_unknown_format_is_refused(world, tmp_path):
    with pytest.raises(CommandError, match="invalid choice: 'docx'"):
        run("--month", "2026-02", "--format", "docx", "--output", str(tmp_path / "r"))


def test_a_failure_exits_non_zero_with_its_message_on_stderr():
    # A process of its own, for its exit status; the month is refused before the
    # database is read.
    result = subprocess.run(
        [sys.executable, "manage.py", "monthly_report", "--month", "2026-13"]
        + ["--format", "pdf", "--output", "-"],
        cwd=ROOT,
        env={**os.environ, "DJANGO_DEBUG": "true"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "--month must be YYYY-MM, got '2026-13': no such month" in result.stderr
    assert result.stdout == ""
