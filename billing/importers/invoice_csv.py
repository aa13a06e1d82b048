"""The invoice template: any vendor's invoice, typed or exported into one CSV shape.

GPU clouds (Lambda, CoreWeave, most neoclouds) publish no billing export, only invoices;
this template is how their cost gets in. `docs/invoice-template.csv` is a filled-in
example. One row per invoice line, these columns (exact, case-sensitive names, all
present in the header; extra columns are ignored):

| column         | value                                                    | required |
|----------------|----------------------------------------------------------|----------|
| vendor         | who issued the invoice, e.g. `Lambda`                    | yes      |
| invoice_number | the vendor's invoice number                              | yes      |
| period_start   | first day of service, `YYYY-MM-DD`                       | yes      |
| period_end     | last day of service, inclusive, `YYYY-MM-DD`             | yes      |
| project        | slug of the project the line is for                      | no       |
| run            | external id of the training run the line is for          | no       |
| gpu_type       | e.g. `H100 80GB SXM`                                     | no       |
| gpu_hours      | GPU-hours billed on the line                             | no       |
| amount         | what the line costs (`1234.56`, `$1,234.56`)             | yes      |
| currency       | ISO 4217 code, e.g. `USD`                                | yes      |
| description    | the line's text on the invoice                           | no       |

Each line becomes one Usage cost row of service "GPU compute" whose four cost measures
all equal `amount`; gpu_hours is its consumed quantity in GPU-Hours, gpu_type its
resource type, description its charge description. Its charge period is
[period_start, period_end + 1 day); its billing period is the calendar month (UTC) of
period_start.

Like any import, a file restates whole billing months of its source: importing it
replaces every row the source holds for the months its lines fall in. So a file must
carry all the lines of those months; keeping one source per vendor keeps that easy.

Like every other source, rows are allocated by rules: `project` and `run` become the
tags `project` and `training_run`, which a tag rule matches (tag `project` = the slug,
run tag key `training_run`); without a matching rule a row stays unallocated.
"""

from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from dateutil.relativedelta import relativedelta

from billing.importers.base import CsvFile, ImportFailure, RowParser, clean, new_row
from billing.models import COST_COLUMNS
from core.currencies import ISO_4217_CODES

COLUMNS = (
    "vendor",
    "invoice_number",
    "period_start",
    "period_end",
    "project",
    "run",
    "gpu_type",
    "gpu_hours",
    "amount",
    "currency",
    "description",
)
GPU_COMPUTE = "GPU compute"
GPU_HOURS_UNIT = "GPU-Hours"


class InvoiceCsvImporter:
    name = "invoice-csv"

    @staticmethod
    def accepts(header: list[str]) -> bool:
        # Enough to recognise the template, so a file missing another column is
        # still detected and then refused with the missing column's name.
        return {"vendor", "invoice_number", "period_start"} <= set(header)

    def rows(self, path: Path) -> Iterator[dict]:
        source = CsvFile(path)
        header = source.header()
        if not header:
            raise ImportFailure("the file is empty", file=path.name)
        missing = [column for column in COLUMNS if column not in header]
        if missing:
            raise ImportFailure(
                f"is not an invoice template: missing column {', '.join(missing)}",
                file=path.name,
            )
        parse = RowParser(path.name)
        for row_number, record in source.records():
            parse.row = row_number
            yield _parse_line(parse, record)


def invoice_line_row(
    *,
    vendor: str,
    invoice_number: str,
    period_start: date,
    period_end: date,
    amount: Decimal,
    currency: str,
    gpu_type: str = "",
    gpu_hours: Decimal | None = None,
    description: str = "",
    tags: dict[str, str] | None = None,
) -> dict:
    """One invoice line as a normalised row; `period_end` is the inclusive last day.

    Shared with approved ComputeInvoices, so a typed invoice and an approved one
    become the same cost.
    """
    start = _midnight(period_start)
    billing_start = start.replace(day=1)
    return new_row() | {
        "billing_period_start": billing_start,
        "billing_period_end": billing_start + relativedelta(months=1),
        "charge_period_start": start,
        "charge_period_end": _midnight(period_end + timedelta(days=1)),
        "charge_category": "Usage",
        "charge_description": description,
        "billing_currency": currency,
        "invoice_id": invoice_number,
        "provider_name": vendor,
        "invoice_issuer_name": vendor,
        "service_name": GPU_COMPUTE,
        "resource_type": gpu_type,
        "consumed_quantity": gpu_hours,
        "consumed_unit": GPU_HOURS_UNIT if gpu_hours is not None else "",
        "tags": tags or {},
        **dict.fromkeys(COST_COLUMNS, amount),
    }


def _parse_line(parse: RowParser, record: Mapping[str, str]) -> dict:
    period_start = _day(parse, record, "period_start")
    period_end = _day(parse, record, "period_end")
    if period_end < period_start:
        raise parse.fail("period_end", "is before period_start")
    gpu_hours = parse.decimal(record, "gpu_hours")
    if gpu_hours is not None and gpu_hours < 0:
        raise parse.fail("gpu_hours", "is negative")
    return invoice_line_row(
        vendor=_required_text(parse, record, "vendor", "provider_name"),
        invoice_number=_required_text(parse, record, "invoice_number", "invoice_id"),
        period_start=period_start,
        period_end=period_end,
        amount=parse.required_decimal(record, "amount"),
        currency=_currency(parse, record),
        gpu_type=parse.text(record, "gpu_type", "resource_type"),
        gpu_hours=gpu_hours,
        description=parse.text(record, "description", "charge_description"),
        tags=_tags(record),
    )


def _required_text(
    parse: RowParser, record: Mapping[str, str], column: str, field: str
) -> str:
    value = parse.text(record, column, field)
    if not value:
        raise parse.fail(column, "is empty")
    return value


def _day(parse: RowParser, record: Mapping[str, str], column: str) -> date:
    value = clean(record.get(column))
    if value is None:
        raise parse.fail(column, "is empty but a date is required")
    try:
        # One documented form only: 03/04/2026 means different days to different people.
        return datetime.strptime(value, "%Y-%m-%d").date()  # noqa: DTZ007 (a date)
    except ValueError:
        raise parse.fail(column, f"{value[:40]!r} is not a YYYY-MM-DD date") from None


def _currency(parse: RowParser, record: Mapping[str, str]) -> str:
    code = parse.text(record, "currency", "billing_currency").upper()
    if not code:
        raise parse.fail("currency", "is empty")
    if code not in ISO_4217_CODES:
        raise parse.fail("currency", f"{code[:40]!r} is not an ISO 4217 currency code")
    return code


def _tags(record: Mapping[str, str]) -> dict[str, str]:
    """The tags a tag rule matches: `project` and `run`, where the row has them."""
    names = {"project": "project", "training_run": "run"}
    tags = {key: clean(record.get(column)) for key, column in names.items()}
    return {key: value for key, value in tags.items() if value}


def _midnight(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), tzinfo=UTC)
