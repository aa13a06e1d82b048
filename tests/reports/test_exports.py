"""The report's exports, read back as a person's tools read them (csv, openpyxl, a PDF
text extractor) and compared with the figures of its JSON."""

import csv
import io
import json
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.urls import reverse
from openpyxl import load_workbook
from pypdf import PdfReader

from accounts.models import Team
from core.currencies import money
from core.exports import FORMULA_STARTS
from projects.models import Project
from reports.checks import records_check_run
from reports.exports import (
    journal_lines,
    render_csv,
    render_journal,
    render_json,
    render_pdf,
    render_xlsx,
    report_sections,
)
from reports.services import monthly_report
from tests.conftest import make_project, make_spend

pytestmark = pytest.mark.django_db

FEBRUARY = date(2026, 2, 1)
PROVISIONAL = "Provisional — figures may still change"
LINK = '=HYPERLINK("http://x.test")'
HOSTILE = (LINK, "+cmd", "@SUM(1)", "-2+3")  # two projects, a team, a provider
A4_LANDSCAPE = (842, 595)  # points, rounded


@pytest.fixture(autouse=True)
def in_march(time_machine):
    time_machine.move_to(datetime(2026, 3, 10, 9, tzinfo=UTC), tick=False)


@pytest.fixture
def hostile(world, february):
    """Names a spreadsheet would run as formulas, with spend in February."""
    team = Team.objects.create(name="@SUM(1)", slug="sum-team")
    link = make_project(team, world.lead, "link", name=LINK)
    cmd = make_project(world.team, world.lead, "cmd", name="+cmd")
    make_spend(link, date(2026, 2, 14), "30")
    make_spend(cmd, date(2026, 2, 15), "20", provider_name="-2+3")


def finance_report(*, stored_check: bool = False):
    return monthly_report(
        month=FEBRUARY,
        teams=Team.objects.all(),
        whole_organisation=True,
        stored_check=stored_check,
    )


def amount(value) -> Decimal | None:
    """A cell or a JSON value as an exact decimal; a spreadsheet's number goes
    through its shortest text, exact for the 15 digits a spreadsheet keeps."""
    if value in (None, ""):
        return None
    return Decimal(str(value))


# Reading the files back


def csv_sections(content: bytes) -> tuple[str, dict[str, list[dict]]]:
    """The title line, then each section's rows as {heading: cell}."""
    rows = list(csv.reader(io.StringIO(content.decode())))
    title, sections, block = rows[0][0], {}, []
    for row in [*rows[2:], []]:
        if row:
            block.append(row)
            continue
        name, header, *cells = block
        sections[name[0]] = [dict(zip(header, cell, strict=True)) for cell in cells]
        block = []
    return title, sections


def sheet_rows(sheet) -> list[dict]:
    header = [cell.value for cell in sheet[2]]
    return [
        dict(zip(header, row, strict=True))
        for row in sheet.iter_rows(min_row=3, values_only=True)
    ]


def pdf_pages(content: bytes) -> list[str]:
    return [page.extract_text() for page in PdfReader(io.BytesIO(content)).pages]


def json_projects(data: dict) -> dict[str, dict]:
    return {p["slug"]: p for team in data["teams"] for p in team["projects"]}


PROJECT_AMOUNTS = {
    "Plan": "plan",
    "Actual": "actual",
    "Variance": "variance",
    "Billed cost": "billed",
    "Effective cost": "effective",
    "Year to date plan": "ytd_plan",
    "Year to date actual": "ytd_actual",
    "Forecast": "forecast",
}
TOTALS = {
    "Plan": "plan",
    "Actual (effective cost)": "effective",
    "Billed cost": "billed",
    "Variance": "variance",
    "Unallocated (effective cost)": "unallocated",
    "Provisional (effective cost)": "provisional",
}


def assert_same_figures(sections: dict[str, list[dict]], data: dict) -> None:
    """CSV sections or XLSX sheets against the JSON, figure by figure."""
    totals = {row["Figure"]: amount(row["Amount"]) for row in sections["Totals"]}
    for figure, key in TOTALS.items():
        assert totals[figure] == Decimal(data["totals"][key]), figure
    projects = json_projects(data)
    assert len(sections["Projects"]) == len(projects)
    for row in sections["Projects"]:
        expected = projects[row["Slug"]]
        for heading, key in PROJECT_AMOUNTS.items():
            assert amount(row[heading]) == amount(expected[key]), (row["Slug"], key)
    runs = [r for p in projects.values() for r in p["runs"]]
    assert [
        (amount(row["Month actual"]), amount(row["Actual to date"]))
        for row in sections["Runs"]
    ] == [(amount(r["month_actual"]), amount(r["actual_to_date"])) for r in runs]
    providers = {
        row["Provider"]: (amount(row["Billed cost"]), amount(row["Effective cost"]))
        for row in sections["By provider"]
    }
    assert providers == {
        row["name"]: (Decimal(row["billed"]), Decimal(row["effective"]))
        for row in data["by_provider"]
    }
    assert [amount(row["Actual"]) for row in sections["Trend"]] == [
        Decimal(row["actual"]) for row in data["trend"]
    ]
    reconciliation = {
        r["Figure"]: amount(r["Amount"]) for r in sections["Reconciliation"]
    }
    assert reconciliation["Difference"] == Decimal(data["reconciliation"]["difference"])
    assert {
        row["Currency"]: amount(row["Effective cost"])
        for row in sections["Unconverted"]
    } == {code: Decimal(total) for code, total in data["unconverted"].items()}


# JSON


def test_the_json_export_is_the_reports_json_with_its_keys_sorted(world, february):
    report = finance_report()
    content = render_json(report)
    assert json.loads(content) == report.as_json()
    assert content == render_json(finance_report())
    keys = list(json.loads(content))
    assert keys == sorted(keys)


# CSV


def test_the_csv_carries_every_figure_of_the_json_exactly(world, february):
    make_spend(world.project, date(2026, 2, 6), "0.12345678901")
    report = finance_report()
    title, sections = csv_sections(render_csv(report))
    assert title.startswith("Spendtracker monthly report, February 2026, in USD")
    assert PROVISIONAL in title
    assert list(sections) == [s.title for s in report_sections(report)]
    assert_same_figures(sections, report.as_json())
    llama = next(r for r in sections["Projects"] if r["Slug"] == "llama-sft")
    assert llama["Actual"] == "2200.12345678901"


# XLSX


def test_the_xlsx_has_a_sheet_per_section_with_frozen_headers(world, february):
    report = finance_report()
    book = load_workbook(io.BytesIO(render_xlsx(report)))
    assert book.sheetnames == [s.title for s in report_sections(report)]
    for sheet in book:
        assert sheet.freeze_panes == "A3", sheet.title
        assert PROVISIONAL in sheet["A1"].value
    headers = [cell.value for cell in book["Projects"][2]]
    assert headers[:5] == ["Team", "Project", "Slug", "Measure", "Plan"]


def test_xlsx_amounts_are_numbers_in_the_currency_format_with_the_jsons_figures(
    world, february
):
    make_spend(world.project, date(2026, 2, 6), "0.12345678901")
    report = finance_report()
    book = load_workbook(io.BytesIO(render_xlsx(report)))
    sections = {sheet.title: sheet_rows(sheet) for sheet in book}
    assert_same_figures(sections, report.as_json())
    plan = book["Projects"]["E3"]
    assert plan.data_type == "n"
    assert plan.number_format == '#,##0.00 "USD"'
    actual = next(r for r in sections["Projects"] if r["Slug"] == "llama-sft")["Actual"]
    assert amount(actual) == Decimal("2200.12345678901")
    assert isinstance(sections["Trend"][-1]["Month"], str)


# PDF


def test_the_pdf_is_a4_landscape_and_marks_every_numbered_page_provisional(
    world, february
):
    pages = PdfReader(io.BytesIO(render_pdf(finance_report()))).pages
    assert len(pages) > 1
    for number, page in enumerate(pages, start=1):
        box = page.mediabox
        assert (round(box.width), round(box.height)) == A4_LANDSCAPE
        text = page.extract_text()
        assert PROVISIONAL in text, number
        assert f"Page {number} of {len(pages)}" in text
        assert "February 2026" in text


def test_a_closed_month_says_when_it_closed_on_every_page(world, february):
    report = finance_report()
    report.status, report.closed_on = "closed", date(2026, 3, 5)
    pages = pdf_pages(render_pdf(report))
    assert all("Closed on 5 March 2026" in text for text in pages)
    assert not any(PROVISIONAL in text for text in pages)


def test_the_pdf_shows_the_jsons_figures_as_the_page_rounds_them(world, february):
    report = finance_report()
    data = report.as_json()
    text = "\n".join(pdf_pages(render_pdf(report)))
    for key in ("plan", "effective", "variance", "unallocated"):
        assert money(Decimal(data["totals"][key]), "USD") in text, key
    for project in json_projects(data).values():
        assert project["name"] in text
        for key in ("plan", "actual", "ytd_actual"):
            assert money(Decimal(project[key]), "USD") in text, (project["slug"], key)
    for row in data["by_provider"]:
        assert money(Decimal(row["effective"]), "USD") in text
    # The notes the page sets in small type, printed plainly.
    llama = json_projects(data)[world.project.slug]
    assert f"{money(Decimal(llama['variance']), 'USD')} +" in text
    assert "to date" in text


# Formulas


def cells_of(fmt: str, content: bytes) -> list[str]:
    """Every text a spreadsheet would read from the file, cell by cell (the PDF's
    lines, for text copied out of it)."""
    if fmt in ("csv", "journal"):
        return [
            cell for row in csv.reader(io.StringIO(content.decode())) for cell in row
        ]
    if fmt == "xlsx":
        book = load_workbook(io.BytesIO(content))
        for sheet in book:
            for row in sheet.iter_rows():
                assert all(cell.data_type != "f" for cell in row), sheet.title
        return [
            value
            for sheet in book
            for row in sheet.iter_rows(values_only=True)
            for value in row
            if isinstance(value, str)
        ]
    if fmt == "json":
        texts: list[str] = []

        def walk(value):
            if isinstance(value, dict):
                texts.extend(str(key) for key in value)
                for item in value.values():
                    walk(item)
            elif isinstance(value, list):
                for item in value:
                    walk(item)
            elif isinstance(value, str):
                texts.append(value)

        walk(json.loads(content))
        return texts
    return [line for page in pdf_pages(content) for line in page.splitlines()]


RENDERERS = {
    "csv": render_csv,
    "xlsx": render_xlsx,
    "pdf": render_pdf,
    "json": render_json,
    "journal": render_journal,
}


def is_number(text: str) -> bool:
    try:
        Decimal(text)
    except ArithmeticError:
        return False
    return True


@pytest.mark.parametrize("fmt", sorted(RENDERERS))
def test_no_export_lets_a_name_start_a_formula(world, hostile, fmt):
    cells = cells_of(fmt, RENDERERS[fmt](finance_report()))
    text = "\n".join(cells)
    named = HOSTILE if fmt != "journal" else (LINK, "+cmd")  # no team names there
    for name in named:
        assert f"'{name}" in text, name
        assert not any(cell.startswith(name) for cell in cells), name
    if fmt != "pdf":  # a page of text, not cells: "+13% of plan" is its own words
        formulas = [
            c for c in cells if c.startswith(FORMULA_STARTS) and not is_number(c)
        ]
        assert formulas == []


# The journal


def journal_rows(content: bytes) -> list[dict]:
    return list(csv.DictReader(io.StringIO(content.decode())))


def test_the_journal_posts_each_projects_effective_cost_to_its_teams_cost_centre(
    world, february, settings
):
    settings.CHARGEBACK_DEFAULT_COST_CENTRE = "CC-0000"
    settings.CHARGEBACK_DEFAULT_GL_ACCOUNT = "6999"
    Team.objects.filter(pk=world.team.pk).update(
        cost_centre="CC-4100", gl_account="6420"
    )
    rows = journal_rows(render_journal(finance_report()))
    assert list(rows[0]) == [
        "period",
        "cost_centre",
        "gl_account",
        "team",
        "project",
        "amount",
        "currency",
        "description",
    ]
    posted = {
        (r["cost_centre"], r["gl_account"], r["team"], r["project"]): r["amount"]
        for r in rows
    }
    assert {key: Decimal(value) for key, value in posted.items()} == {
        ("CC-4100", "6420", "foundation", "llama-sft"): Decimal("2200"),
        # billed-proj tracks billed cost (250); the journal posts effective cost.
        ("CC-4100", "6420", "foundation", "billed-proj"): Decimal("200"),
        ("", "", "other", "secret-pretrain"): Decimal("90"),
        ("CC-0000", "6999", "", ""): Decimal("60"),
    }
    assert {r["period"] for r in rows} == {"2026-02"}
    assert {r["currency"] for r in rows} == {"USD"}
    unallocated = next(r for r in rows if not r["project"])
    assert unallocated["description"] == "Unallocated spend, February 2026"


def test_the_journal_adds_up_to_the_reports_total_to_the_last_decimal(world, february):
    make_spend(world.project, date(2026, 2, 6), "0.12345678901")
    make_spend(world.other_project, date(2026, 2, 7), "-3.00000000007")
    report = finance_report()
    rows = journal_rows(render_journal(report))
    total = sum((Decimal(r["amount"]) for r in rows), Decimal(0))
    assert total == report.total.effective_cost == Decimal("2547.12345678894")
    assert sum(line.amount for line in journal_lines(report)) == total


def test_a_cancelled_projects_spend_still_reaches_the_journal(world, february):
    cancelled = make_project(
        world.team, world.lead, "old-run", status=Project.Status.CANCELLED
    )
    make_spend(cancelled, date(2026, 2, 16), "40")
    report = finance_report()
    assert report.total.effective_cost == Decimal("2590")
    lines = journal_lines(report)
    assert sum(line.amount for line in lines) == report.total.effective_cost
    (line,) = [line for line in lines if "cancelled" in line.description]
    assert (line.amount, line.project) == (Decimal("40"), "")


# Downloads


CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "pdf": "application/pdf",
    "json": "application/json",
    "journal": "text/csv; charset=utf-8",
}


# The PDF is drawn by a worker: tests/reports/test_report_files.py.
@pytest.mark.parametrize("fmt", sorted(set(CONTENT_TYPES) - {"pdf"}))
def test_finance_downloads_each_export_as_a_named_file(client, world, february, fmt):
    records_check_run(FEBRUARY)  # what a worker does after each import
    client.force_login(world.finance)
    response = client.get(reverse(f"report_export_{fmt}", args=[FEBRUARY]))
    assert response.status_code == 200
    assert response["Content-Type"] == CONTENT_TYPES[fmt]
    suffix = "journal.csv" if fmt == "journal" else f"report.{fmt}"
    assert response["Content-Disposition"] == (
        f'attachment; filename="spendtracker-2026-02-{suffix}"'
    )
    if fmt in ("csv", "json", "journal"):
        # A web download reads the stored check of the cost records.
        assert response.content == RENDERERS[fmt](finance_report(stored_check=True))


def test_a_lead_exports_only_their_teams_and_no_journal(client, world, february):
    client.force_login(world.lead)
    data = json.loads(
        client.get(reverse("report_export_json", args=[FEBRUARY])).content
    )
    assert [t["slug"] for t in data["teams"]] == ["foundation"]
    assert Decimal(data["totals"]["effective"]) == Decimal("2400")
    csv_text = client.get(reverse("report_export_csv", args=[FEBRUARY])).content
    assert b"Secret Pretrain" not in csv_text
    journal = client.get(reverse("report_export_journal", args=[FEBRUARY]))
    assert journal.status_code == 403


def test_the_report_page_offers_the_exports_and_the_journal_to_finance_only(
    client, world, february
):
    client.force_login(world.finance)
    page = client.get(reverse("report_detail", args=[FEBRUARY])).content.decode()
    for fmt in CONTENT_TYPES:
        assert reverse(f"report_export_{fmt}", args=[FEBRUARY]) in page
    client.force_login(world.member)
    page = client.get(reverse("report_detail", args=[FEBRUARY])).content.decode()
    assert reverse("report_export_pdf", args=[FEBRUARY]) in page
    assert reverse("report_export_journal", args=[FEBRUARY]) not in page


def test_an_export_of_a_month_that_has_not_begun_is_not_found(client, world):
    client.force_login(world.finance)
    url = reverse("report_export_csv", args=[date(2026, 4, 1)])
    assert client.get(url).status_code == 404
