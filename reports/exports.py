"""The monthly report as files, and finance's chargeback journal.

Every file carries the same figures. The JSON is `MonthlyReport.as_json()`; the CSV
and the XLSX are the same tables (`report_sections`) read from that JSON; the PDF is
the report page's own template (`reports/_report_body.html`). A text cell that a
spreadsheet would run as a formula (it starts with `=`, `+`, `-`, `@`, a tab or a
carriage return) starts with a `'` in every one of them (`core.exports`); amounts are
numbers, never text, so a negative amount keeps its sign.

Month close stores `render_json` and `render_pdf` as the month's snapshot: their
names and signatures are part of that contract.
"""

import csv
import io
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.template.loader import render_to_string
from openpyxl import Workbook
from openpyxl.styles import Font, PatternFill
from openpyxl.utils import get_column_letter

from core.currencies import ZERO
from core.exports import spreadsheet_safe
from reports.charts import report_charts
from reports.services import MonthlyReport

Cell = str | Decimal | None

TEXT = "text"
MONEY = "money"  # in the report's currency
NUMBER = "number"  # GPU-hours, or an amount whose currency is in its own column
RATE = "rate"  # an FX rate
COUNT = "count"  # days, rates

# The keys of `as_json()` whose values are names people or providers chose; every
# other string there is an amount, a code or a date, and is left exactly as it is.
JSON_TEXT_KEYS = frozenset(
    {
        "name",
        "slug",
        "reason",
        "external_id",
        "provider",
        "team",
        "invoice_id",
        "sources",
    }
)

JOURNAL_COLUMNS = (
    "period",
    "cost_centre",
    "gl_account",
    "team",
    "project",
    "amount",
    "currency",
    "description",
)


@dataclass(frozen=True)
class Section:
    """One table of the report: a CSV block, an XLSX sheet."""

    title: str
    columns: tuple[tuple[str, str], ...]  # (heading, kind: TEXT, MONEY, ...)
    rows: list[tuple[Cell, ...]]


@dataclass(frozen=True)
class JournalLine:
    period: str
    cost_centre: str
    gl_account: str
    team: str
    project: str
    amount: Decimal
    description: str


def status_label(report: MonthlyReport) -> str:
    """What every page and sheet says about how final the figures are."""
    if report.status == "closed":
        closed = report.closed_on
        return f"Closed on {closed.day} {closed:%B %Y}" if closed else "Closed"
    return "Provisional — figures may still change"


def report_title(report: MonthlyReport) -> str:
    return (
        f"Spendtracker monthly report, {report.month:%B %Y}, in {report.currency}: "
        f"{status_label(report)}"
    )


# The sections


def report_sections(report: MonthlyReport) -> list[Section]:
    """The report's tables, read from `as_json()`: the CSV and the XLSX are views of
    the JSON, so the three carry the same figures by construction."""
    data = report.as_json()
    totals = data["totals"]
    reconciliation = data["reconciliation"]
    return [
        _about(report),
        Section(
            "Totals",
            (("Figure", TEXT), ("Amount", MONEY)),
            [
                ("Plan", _amount(totals["plan"])),
                ("Actual (effective cost)", _amount(totals["effective"])),
                ("Billed cost", _amount(totals["billed"])),
                ("Variance", _amount(totals["variance"])),
                ("Unallocated (effective cost)", _amount(totals["unallocated"])),
                ("Unallocated (billed cost)", _amount(data["unallocated"]["billed"])),
                ("Provisional (effective cost)", _amount(totals["provisional"])),
            ],
        ),
        Section(
            "By measure",
            (
                ("Measure", TEXT),
                ("Plan", MONEY),
                ("Actual", MONEY),
                ("Variance", MONEY),
            ),
            [_plan_actual(row) for row in totals["by_measure"]],
        ),
        Section(
            "Teams",
            (
                ("Team", TEXT),
                ("Measure", TEXT),
                ("Plan", MONEY),
                ("Actual", MONEY),
                ("Variance", MONEY),
            ),
            [
                (team["name"], *_plan_actual(row))
                for team in data["teams"]
                for row in team["by_measure"]
            ],
        ),
        _projects(data["teams"]),
        _runs(data["teams"]),
        _breakdown("By provider", "Provider", data["by_provider"]),
        _breakdown(
            "By service category", "Service category", data["by_service_category"]
        ),
        _breakdown("By charge category", "Charge category", data["by_charge_category"]),
        Section(
            "Trend",
            (("Month", TEXT), ("Plan", MONEY), ("Actual", MONEY)),
            [
                (row["month"], _amount(row["plan"]), _amount(row["actual"]))
                for row in data["trend"]
            ],
        ),
        Section(
            "Reconciliation",
            (("Figure", TEXT), ("Amount", MONEY)),
            [
                ("Projects plus unallocated", _amount(reconciliation["report_total"])),
                ("Every cost of the month", _amount(reconciliation["records_total"])),
                ("Difference", _amount(reconciliation["difference"])),
            ],
        ),
        _by_currency(reconciliation["by_currency"]),
        _invoices(reconciliation["invoices"]),
        _accruals(data["accruals"]["rows"]),
        _rates(data["fx"]["rates_used"]),
        _missing_rates(data["fx"]["missing"]),
        Section(
            "Unconverted",
            (("Currency", TEXT), ("Effective cost", NUMBER)),
            [(code, _amount(total)) for code, total in data["unconverted"].items()],
        ),
    ]


def _amount(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def _yes_no(value: bool) -> str:
    return "yes" if value else "no"


def _plan_actual(row: dict) -> tuple[Cell, ...]:
    return (
        row["measure"],
        _amount(row["plan"]),
        _amount(row["actual"]),
        _amount(row["variance"]),
    )


def _about(report: MonthlyReport) -> Section:
    scope = (
        "Whole organisation"
        if report.whole_organisation
        else "Teams: " + ", ".join(t.team.name for t in report.teams)
    )
    closed = report.closed_on.isoformat() if report.closed_on else ""
    return Section(
        "Report",
        (("Field", TEXT), ("Value", TEXT)),
        [
            ("Month", f"{report.month:%Y-%m}"),
            ("Currency", report.currency),
            ("Status", report.status),
            ("Marked", status_label(report)),
            ("Closed on", closed),
            ("As of", report.as_of.isoformat()),
            ("Data complete", _yes_no(report.complete)),
            ("Scope", scope),
        ],
    )


def _projects(teams: list[dict]) -> Section:
    return Section(
        "Projects",
        (
            ("Team", TEXT),
            ("Project", TEXT),
            ("Slug", TEXT),
            ("Measure", TEXT),
            ("Plan", MONEY),
            ("Actual", MONEY),
            ("Variance", MONEY),
            ("Billed cost", MONEY),
            ("Effective cost", MONEY),
            ("Year to date plan", MONEY),
            ("Year to date actual", MONEY),
            ("Forecast", MONEY),
            ("Status", TEXT),
            ("Reason", TEXT),
        ),
        [
            (
                team["name"],
                p["name"],
                p["slug"],
                p["measure"],
                *(
                    _amount(p[key])
                    for key in (
                        "plan",
                        "actual",
                        "variance",
                        "billed",
                        "effective",
                        "ytd_plan",
                        "ytd_actual",
                        "forecast",
                    )
                ),
                p["status"],
                p["reason"],
            )
            for team in teams
            for p in team["projects"]
        ],
    )


def _runs(teams: list[dict]) -> Section:
    return Section(
        "Runs",
        (
            ("Team", TEXT),
            ("Project", TEXT),
            ("Run", TEXT),
            ("External id", TEXT),
            ("Month actual", MONEY),
            ("Planned cost", MONEY),
            ("Actual to date", MONEY),
            ("Status", TEXT),
        ),
        [
            (
                team["name"],
                p["name"],
                run["name"],
                run["external_id"],
                _amount(run["month_actual"]),
                _amount(run["planned_cost"]),
                _amount(run["actual_to_date"]),
                run["status"],
            )
            for team in teams
            for p in team["projects"]
            for run in p["runs"]
        ],
    )


def _breakdown(title: str, name: str, rows: list[dict]) -> Section:
    return Section(
        title,
        (
            (name, TEXT),
            ("Billed cost", MONEY),
            ("Effective cost", MONEY),
            ("GPU-hours", NUMBER),
            ("Effective cost per GPU-hour", MONEY),
        ),
        [
            (
                row["name"],
                _amount(row["billed"]),
                _amount(row["effective"]),
                _amount(row["gpu_hours"]),
                _amount(row["cost_per_gpu_hour"]),
            )
            for row in rows
        ],
    )


def _by_currency(rows: list[dict]) -> Section:
    """Each billing currency and measure: amounts in that currency, then converted."""
    return Section(
        "Reconciliation by currency",
        (
            ("Measure", TEXT),
            ("Currency", TEXT),
            ("Cost records", NUMBER),
            ("In the report", NUMBER),
            ("Difference", NUMBER),
            ("Cost records, converted", MONEY),
            ("In the report, converted", MONEY),
            ("Converted difference", MONEY),
            ("Cost records without a rate", NUMBER),
            ("In the report without a rate", NUMBER),
        ),
        [
            (
                row["measure"],
                row["currency"],
                *(
                    _amount(row[key])
                    for key in (
                        "records",
                        "report",
                        "difference",
                        "records_converted",
                        "report_converted",
                        "converted_difference",
                        "records_unconverted",
                        "report_unconverted",
                    )
                ),
            )
            for row in rows
        ],
    )


def _invoices(rows: list[dict]) -> Section:
    """Each provider invoice of the month, in its own currency."""
    return Section(
        "Invoices",
        (
            ("Sources", TEXT),
            ("Provider", TEXT),
            ("Invoice id", TEXT),
            ("Currency", TEXT),
            ("Billed (cost records)", NUMBER),
            ("Invoice total", NUMBER),
            ("Difference", NUMBER),
            ("Flagged", TEXT),
        ),
        [
            (
                ", ".join(row["sources"]),
                row["provider"],
                row["invoice_id"],
                row["currency"],
                _amount(row["billed"]),
                _amount(row["entered"]),
                _amount(row["difference"]),
                _yes_no(row["flagged"]),
            )
            for row in rows
        ],
    )


def _accruals(rows: list[dict]) -> Section:
    return Section(
        "Accruals",
        (
            ("Provider", TEXT),
            ("Team", TEXT),
            ("Provisional now", MONEY),
            ("Final now", MONEY),
            ("Accrued", MONEY),
            ("Final at booking", MONEY),
            ("True-up", MONEY),
            ("Invoiced", TEXT),
        ),
        [
            (
                row["provider"],
                row["team"] or "(unallocated)",
                *(
                    _amount(row[key])
                    for key in (
                        "provisional",
                        "final",
                        "accrued",
                        "final_at_booking",
                        "true_up",
                    )
                ),
                _yes_no(row["invoiced"]),
            )
            for row in rows
        ],
    )


def _rates(rows: list[dict]) -> Section:
    """The FX rates the month's spend in other currencies was converted with."""
    return Section(
        "FX rates",
        (
            ("Currency", TEXT),
            ("Days converted", COUNT),
            ("Rates", COUNT),
            ("First day", TEXT),
            ("First rate", RATE),
            ("Last day", TEXT),
            ("Last rate", RATE),
        ),
        [
            (
                row["currency"],
                Decimal(row["days"]),
                Decimal(row["rates"]),
                row["first"]["date"],
                _amount(row["first"]["rate"]),
                row["last"]["date"],
                _amount(row["last"]["rate"]),
            )
            for row in rows
        ],
    )


def _missing_rates(rows: list[dict]) -> Section:
    """Spend on days without a rate: in its own currency, out of every total."""
    return Section(
        "Missing FX rates",
        (("Currency", TEXT), ("Days", TEXT), ("Effective cost", NUMBER)),
        [
            (row["currency"], row["days_text"], _amount(row["effective"]))
            for row in rows
        ],
    )


# CSV


def render_csv(report: MonthlyReport) -> bytes:
    """The sections one after the other: each a title line, a header line and its
    rows, an empty line between two. UTF-8, amounts as exact decimals."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([spreadsheet_safe(report_title(report))])
    for section in report_sections(report):
        writer.writerow([])
        writer.writerow([section.title])
        writer.writerow([heading for heading, _kind in section.columns])
        writer.writerows([_csv_cell(cell) for cell in row] for row in section.rows)
    return out.getvalue().encode()


def _csv_cell(cell: Cell) -> str:
    if cell is None:
        return ""
    if isinstance(cell, Decimal):
        return format(cell, "f")  # never `1E-11`
    return spreadsheet_safe(cell)


# XLSX


def render_xlsx(report: MonthlyReport) -> bytes:
    """A sheet per section, its title and header rows frozen, amounts as numbers in
    the report's currency format."""
    book = Workbook()
    book.remove(book.active)
    formats = {
        MONEY: f'#,##0.00 "{report.currency}"',
        NUMBER: "#,##0.00",
        RATE: "0.0000######",
        COUNT: "#,##0",
    }
    title = report_title(report)
    for section in report_sections(report):
        _sheet(book, section, title, formats)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def _sheet(book: Workbook, section: Section, title: str, formats: dict) -> None:
    sheet = book.create_sheet(section.title)
    sheet.append([title])
    sheet["A1"].font = Font(bold=True, size=12)
    sheet.append([heading for heading, _kind in section.columns])
    for cell in sheet[2]:
        cell.font = Font(bold=True)
        cell.fill = PatternFill("solid", fgColor="E3E7EF")
    for row in section.rows:
        sheet.append([_xlsx_cell(cell) for cell in row])
    for index, (heading, kind) in enumerate(section.columns, start=1):
        letter = get_column_letter(index)
        if kind in formats:
            for (cell,) in sheet.iter_rows(min_row=3, min_col=index, max_col=index):
                cell.number_format = formats[kind]
        sheet.column_dimensions[letter].width = _width(heading, kind, section, index)
    sheet.freeze_panes = "A3"
    if section.rows:
        last = get_column_letter(len(section.columns))
        sheet.auto_filter.ref = f"A2:{last}{len(section.rows) + 2}"


def _xlsx_cell(cell: Cell) -> Any:
    # openpyxl reads a string starting with `=` as a formula: escaped, it is text.
    return spreadsheet_safe(cell)


def _width(heading: str, kind: str, section: Section, index: int) -> float:
    if kind != TEXT:
        return max(len(heading), 16) + 2
    longest = max((len(str(row[index - 1] or "")) for row in section.rows), default=0)
    return min(max(len(heading), longest, 8) + 2, 60)


# JSON


def render_json(report: MonthlyReport) -> bytes:
    """`as_json()` with sorted keys, so the same figures give the same bytes."""
    data = _json_escaped(report.as_json())
    return (
        json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    ).encode()


def _json_escaped(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _json_escaped(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_escaped(item, key) for item in value]
    return spreadsheet_safe(value) if key in JSON_TEXT_KEYS else value


# PDF


def render_pdf(report: MonthlyReport) -> bytes:
    """The report page's body on A4 landscape, the month and how final it is on
    every page, pages numbered. CPU-bound: see the README's known limits."""
    # Imported here: half a second and Pango's libraries, which only a PDF needs.
    from weasyprint import HTML
    from weasyprint.urls import URLFetcher

    # Fetch nothing: the page has no images, its stylesheet is its own, and a
    # report must never make a request on its reader's behalf.
    no_fetching = URLFetcher(allowed_protocols=())
    html = render_to_string(
        "reports/report_pdf.html",
        {"report": report, "status_label": status_label(report)}
        | report_charts(report),
    )
    document = HTML(
        string=html, base_url=f"{settings.SITE_URL}/", url_fetcher=no_fetching
    )
    return document.write_pdf()


# The chargeback journal


def journal_lines(report: MonthlyReport) -> list[JournalLine]:
    """One line per team and project with spend in the month, in effective cost,
    to the team's cost centre and GL account; spend of no project goes to the
    default cost centre. The lines add up to the report's total effective cost."""
    period = f"{report.month:%Y-%m}"
    month = f"{report.month:%B %Y}"
    lines = [
        JournalLine(
            period=period,
            cost_centre=team.team.cost_centre,
            gl_account=team.team.gl_account,
            team=team.team.slug,
            project=project.project.slug,
            amount=project.month.effective_cost,
            description=f"{project.project.name} ({team.team.name}), {month}",
        )
        for team in report.teams
        for project in team.projects
        if project.month.effective_cost
    ]
    unallocated = report.unallocated.effective_cost
    # Cancelled projects are not in the report, but what they spent in the month is
    # in its total: the one part of the total on neither a project nor unallocated.
    cancelled = report.total.effective_cost - unallocated
    cancelled -= sum((p.month.effective_cost for p in report.projects), ZERO)
    for amount, description in (
        (unallocated, f"Unallocated spend, {month}"),
        (cancelled, f"Spend of cancelled projects, {month}"),
    ):
        if amount:
            lines.append(
                JournalLine(
                    period=period,
                    cost_centre=settings.CHARGEBACK_DEFAULT_COST_CENTRE,
                    gl_account=settings.CHARGEBACK_DEFAULT_GL_ACCOUNT,
                    team="",
                    project="",
                    amount=amount,
                    description=description,
                )
            )
    return lines


def render_journal(report: MonthlyReport) -> bytes:
    """The journal as CSV, one header line then one line per journal line."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(JOURNAL_COLUMNS)
    for line in journal_lines(report):
        writer.writerow(
            [
                _csv_cell(line.period),
                _csv_cell(line.cost_centre),
                _csv_cell(line.gl_account),
                _csv_cell(line.team),
                _csv_cell(line.project),
                _csv_cell(line.amount),
                _csv_cell(report.currency),
                _csv_cell(line.description),
            ]
        )
    return out.getvalue().encode()
