"""The columnar path of FOCUS CSV files (Arrow, on PostgreSQL) loads exactly what the
row path loads, or gives way to it: every record, field by field, and every total of
the result, compared on the real samples and on what real files do."""

import csv
import gzip
import json
import logging
import re
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import time_machine
from dateutil.relativedelta import relativedelta
from django.utils import timezone

from billing.importers import base
from billing.importers.base import NotColumnar
from billing.importers.focus import FocusImporter
from billing.models import CostRecord, ImportRun
from projects.models import AllocationRule
from tests.billing.importing import read_csv, run_import, write_csv
from tests.billing.test_billing_import import FOCUS_REAL, SPEC_EXAMPLES
from tests.conftest import make_project

pytestmark = pytest.mark.django_db(transaction=True)

APP_DIR = Path(__file__).resolve().parents[2]
COMPARED = [
    f.attname
    for f in CostRecord._meta.concrete_fields
    if f.attname not in ("id", "source_id", "import_run_id")
]
GAVE_WAY = "read row by row"
PLAIN = re.compile(r"-?\d+(\.\d{1,11})?")


def records(source: str) -> list[tuple]:
    rows = CostRecord.objects.filter(source__name=source).values_list(*COMPARED)
    return sorted(json.dumps(row, sort_keys=True, default=str) for row in rows)


def both_ways(path: Path, monkeypatch, caplog, **options) -> tuple[dict, dict, bool]:
    """Import `path` by the normal path and again with the columnar path refused;
    the two results (source name left out) and whether the first gave way."""
    with caplog.at_level(logging.INFO, logger="billing.loader"):
        code, normal = run_import(path, source="normal", format="focus", **options)
    gave_way = any(GAVE_WAY in message for message in caplog.messages)
    with monkeypatch.context() as patched:
        patched.setattr(FocusImporter, "column_batches", refuse)
        # The same file in a second source, on purpose.
        code_by_rows, by_rows = run_import(
            path, source="by-rows", format="focus", allow_overlap=True, **options
        )
    assert code == code_by_rows
    for result, source in ((normal, "normal"), (by_rows, "by-rows")):
        assert result.pop("source") == source
        result["records"] = records(source)
    return normal, by_rows, gave_way


def refuse(self, path):
    raise NotColumnar("refused by the test")


@pytest.fixture
def allocated(world):
    """Rules that allocate part of the real sample, by a tag and by a column, so that
    allocation is compared too."""
    project = make_project(world.team, world.lead, "peoria")
    AllocationRule.objects.create(
        project=project, match_on="tag", tag_key="business_unit", value="PeoriaData"
    )
    compute = make_project(world.team, world.lead, "compute")
    AllocationRule.objects.create(
        project=compute, match_on="service", value="Amazon Elastic Compute Cloud"
    )
    return project, compute


def quirky(tmp_path: Path) -> Path:
    """The real sample with what real exports do: NULL and N/A cells, mixed-case
    values, negative costs and corrections, timestamps with and without T and Z,
    tags with odd keys, a lower-case currency, CRLF line ends, a quoted line break,
    blank lines, a missing list price, amounts with few places ("1.50"), and the
    open month, invoiced or not (provisional)."""
    rows = read_csv(FOCUS_REAL)
    month = timezone.now().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    open_month = {
        "BillingPeriodStart": f"{month:%Y-%m-%d %H:%M:%S}",
        "BillingPeriodEnd": f"{month + relativedelta(months=1):%Y-%m-%d %H:%M:%S}",
        "ChargePeriodStart": f"{month:%Y-%m-%dT%H:%M:%SZ}",
        "ChargePeriodEnd": f"{month + relativedelta(hours=1):%Y-%m-%dT%H:%M:%SZ}",
    }
    for number, row in enumerate(rows):
        row["InvoiceId"] = ""
        match number % 10:
            case 0:
                row["ChargeCategory"] = "usage"
                row["ChargeClass"] = "correction"
                row["BilledCost"] = row["EffectiveCost"] = "-1.50"
            case 1:
                row["ChargePeriodStart"] = row["ChargePeriodStart"].replace(" ", "T")
                row["ChargePeriodEnd"] = row["ChargePeriodEnd"].replace(" ", "T") + "Z"
            case 2:
                row["Tags"] = '{" org": "x", "project": "vienna", "": "empty"}'
            case 3:
                row["ListCost"] = "NULL"
                row["ContractedCost"] = "N/A"
            case 4:
                row["BillingCurrency"] = "usd"
                row["ChargeFrequency"] = "usage-BASED"
            case 5:
                row["ChargeDescription"] = 'two\nlines, "quoted"'
                row["BilledCost"] = "12"
            case 6:
                row.update(open_month)
            case 7:
                row.update(open_month, InvoiceId="INV-2")
            case 8:
                row["BillingCurrency"] = "EUR"
    path = tmp_path / "quirky.csv"
    with path.open("w", encoding="utf-8", newline="") as text:
        writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\r\n")
        writer.writeheader()
        for number, row in enumerate(rows):
            writer.writerow(row)
            if number % 100 == 0:
                text.write("\r\n")
    return path


def generated(tmp_path: Path, rows: int) -> Path:
    """A benchmark-like FOCUS 1.2 file: every column, hourly lines, tags JSON."""
    path = tmp_path / "generated.csv"
    subprocess.run(
        [sys.executable, "bench/generate_focus.py", "--rows", str(rows)]
        + ["--output", str(path)],
        cwd=APP_DIR,
        check=True,
    )
    return path


def null_placeholders(tmp_path: Path) -> Path:
    """The real sample with FOCUS's "(null)" in every column that may be empty, on
    every other row."""
    rows = read_csv(FOCUS_REAL)
    optional = ("ListCost", "ContractedCost", "ConsumedQuantity", "ResourceId")
    for row in rows[::2]:
        row.update(dict.fromkeys((*optional, "ChargeClass", "Tags", "SkuId"), "(null)"))
    return write_csv(tmp_path / "nulls.csv", rows)


def prepaid(tmp_path: Path) -> Path:
    """The real sample with prepaid purchases and their tax (EffectiveCost 0), whose
    list and contracted cost the usage they paid for states."""
    rows = read_csv(FOCUS_REAL)
    for row in rows[::7]:
        row.update(ChargeCategory="purchase", EffectiveCost="0.000")
    for row in rows[3::11]:
        row.update(ChargeCategory="Tax", EffectiveCost="-0")
    return write_csv(tmp_path / "prepaid.csv", rows)


def without_currency(tmp_path: Path) -> Path:
    rows = read_csv(FOCUS_REAL)
    header = [column for column in rows[0] if column != "BillingCurrency"]
    for row in rows:
        del row["BillingCurrency"]
    return write_csv(tmp_path / "no-currency.csv", rows, header)


def gzipped(tmp_path: Path) -> Path:
    path = tmp_path / "focus.csv.gz"
    path.write_bytes(gzip.compress(FOCUS_REAL.read_bytes()))
    return path


COLUMNAR_FILES = {
    "real sample": lambda tmp_path: FOCUS_REAL,
    "gzip": gzipped,
    "quirks of real files": quirky,
    "benchmark-like": lambda tmp_path: generated(tmp_path, 3000),
    "(null) placeholders": null_placeholders,
    "prepaid purchases and their tax": prepaid,
    "no BillingCurrency, a currency given": without_currency,
    **{
        f"spec example {path.stem}": lambda tmp_path, path=path: path
        for path in SPEC_EXAMPLES
    },
}


@pytest.mark.parametrize("make", COLUMNAR_FILES.values(), ids=COLUMNAR_FILES.keys())
def test_the_columnar_path_loads_exactly_what_the_row_path_loads(
    make, tmp_path, monkeypatch, caplog, allocated, time_machine
):
    # The quirky file's open month, and each load's provisional rows, follow the
    # clock: a month turning between the two loads would tell them apart.
    time_machine.move_to(NOW, tick=False)
    path = make(tmp_path)
    # The currency of the files without a BillingCurrency column (the
    # specification's examples are in dollars); the others keep their own.
    normal, by_rows, gave_way = both_ways(path, monkeypatch, caplog, currency="EUR")
    assert normal["status"] == "imported", normal["error"]
    assert normal == by_rows
    assert normal["records"]
    # Only files with amounts that are not plain decimals ("$1,000.00 ", "1E-5")
    # need the row path's reading.
    amounts = [
        row[column]
        for _, row in base.CsvFile(path).records()
        for column in ("BilledCost", "EffectiveCost", "ListCost", "ContractedCost")
        if row.get(column) not in (None, "", "NULL", "N/A", "(null)")
    ]
    assert gave_way == any(not PLAIN.fullmatch(amount) for amount in amounts)


def test_a_file_without_billing_currency_fails_alike_on_both_paths(
    tmp_path, monkeypatch, caplog
):
    normal, by_rows, _ = both_ways(without_currency(tmp_path), monkeypatch, caplog)
    assert normal["status"] == "failed"
    assert normal["error"].startswith("no-currency.csv: has no BillingCurrency column")
    assert normal == by_rows
    assert not CostRecord.objects.exists()


@pytest.mark.parametrize("currency", ["EUR", None], ids=["given", "not given"])
def test_both_paths_read_the_currency_alike(tmp_path, monkeypatch, caplog, currency):
    path = with_last_row(tmp_path, {"BillingCurrency": "(null)"})
    options = {"currency": currency} if currency else {}
    normal, by_rows, _ = both_ways(path, monkeypatch, caplog, **options)
    assert normal == by_rows
    assert normal["error"] == (
        "changed.csv, row 5001, column BillingCurrency: is '(null)', which means no "
        "value, but a currency is required"
    )


def test_a_file_allocates_alike_on_both_paths(tmp_path, monkeypatch, caplog, allocated):
    normal, by_rows, gave_way = both_ways(FOCUS_REAL, monkeypatch, caplog)
    assert not gave_way
    assert normal == by_rows
    left = sum(
        Decimal(row["EffectiveCost"])
        for row in read_csv(FOCUS_REAL)
        if "PeoriaData" not in row["Tags"]
        and row["ServiceName"] != "Amazon Elastic Compute Cloud"
    )
    assert normal["unallocated"] == {"USD": str(left)}
    for project in allocated:
        assert CostRecord.objects.filter(source__name="normal", project=project).count()


def with_last_row(tmp_path: Path, change: dict[str, str]) -> Path:
    """The real sample, repeated to span many blocks, its last row changed."""
    rows = read_csv(FOCUS_REAL) * 5
    rows[-1] = {**rows[-1], **change}
    path = tmp_path / "changed.csv"
    with path.open("w", encoding="utf-8", newline="") as text:
        writer = csv.DictWriter(text, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.mark.parametrize(
    "change",
    [
        {"BilledCost": "1E-5"},
        {"BilledCost": "$1,000.00"},
        {"EffectiveCost": " 12.5 "},
        {"BilledCost": "0.123456789012345"},  # rounded to 11 places by the row path
        {"ConsumedQuantity": "1.5e3"},
    ],
    ids=lambda change: repr(change),
)
def test_what_the_columnar_path_cannot_vouch_for_goes_row_by_row_from_the_start(
    change, tmp_path, monkeypatch, caplog
):
    """Blocks already sent are undone: nothing is counted twice."""
    monkeypatch.setattr(base, "BLOCK_BYTES", 16_384)
    path = with_last_row(tmp_path, change)
    normal, by_rows, gave_way = both_ways(path, monkeypatch, caplog)
    assert gave_way
    assert normal["status"] == "imported", normal["error"]
    assert normal["rows"] == 5000 == len(normal["records"])
    assert normal == by_rows


def test_a_bad_last_row_fails_as_the_row_path_says_and_loads_nothing(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(base, "BLOCK_BYTES", 16_384)
    path = with_last_row(tmp_path, {"ChargePeriodEnd": "2024-01-01 00:00:00"})
    code, result = run_import(path, source="focus")
    assert code == 1
    assert result["error"] == (
        "changed.csv, row 5001, column ChargePeriodEnd: is before ChargePeriodStart"
    )
    assert not CostRecord.objects.exists()
    assert ImportRun.objects.get().status == ImportRun.Status.FAILED


def test_a_quoted_line_break_split_between_two_reads_keeps_its_line_feed(
    tmp_path, monkeypatch, caplog
):
    """Arrow's reader drops the \\n of a \\r\\n that ends one of its reads and starts
    the next: such a file goes row by row, and keeps every byte of its text."""
    rows = read_csv(FOCUS_REAL)[:200]
    for row in rows:
        row["ChargeDescription"] = "two\r\nlines"
    path = tmp_path / "crlf.csv"
    with path.open("w", encoding="utf-8", newline="") as text:
        writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    monkeypatch.setattr(base, "BLOCK_BYTES", path.read_bytes().index(b"\r") + 1)
    normal, by_rows, gave_way = both_ways(path, monkeypatch, caplog)
    assert gave_way
    assert normal == by_rows
    assert CostRecord.objects.filter(charge_description="two\r\nlines").count() == 400


def test_totals_beyond_what_a_decimal_sum_holds_go_row_by_row(
    tmp_path, monkeypatch, caplog
):
    huge = "99999999999999999.99999999999"
    rows = read_csv(FOCUS_REAL)[:3]
    for row in rows:
        row["BilledCost"] = row["EffectiveCost"] = huge
    path = tmp_path / "huge.csv"
    with path.open("w", encoding="utf-8", newline="") as text:
        writer = csv.DictWriter(text, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    normal, by_rows, gave_way = both_ways(path, monkeypatch, caplog)
    assert gave_way
    assert normal["status"] == "imported", normal["error"]
    assert normal == by_rows


NOW = datetime(2026, 1, 15, 12, tzinfo=UTC)
PERIODS = [  # (BillingPeriodStart, BillingPeriodEnd) as exports write them
    ("2025-12-01 00:00:00", "2026-01-01 00:00:00"),  # closed
    ("2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"),  # open
    ("2026-01-01 00:00:00", "2026-01-15 12:00:00"),  # ends at this very moment
    ("2026-01-01 00:00:00", "2026-01-15 12:00:01"),  # ends a second from now
]
INVOICE_IDS = ["", "INV-2026-001", "NULL"]


def provisional_by_description(tmp_path: Path) -> tuple[Path, dict[str, bool]]:
    """The real sample, each row given one of the periods and invoice ids above and a
    description of its own; each row's provisional flag, read from the file itself:
    its billing period has not ended at NOW and it names no invoice."""
    rows = read_csv(FOCUS_REAL)
    expected = {}
    for number, row in enumerate(rows):
        start, end = PERIODS[number % len(PERIODS)]
        invoice = INVOICE_IDS[number // len(PERIODS) % len(INVOICE_IDS)]
        row.update(
            BillingPeriodStart=start,
            BillingPeriodEnd=end,
            InvoiceId=invoice,
            ChargePeriodStart=start,
            ChargePeriodEnd=start,
            ChargeDescription=f"row {number}",
        )
        period_end = datetime.fromisoformat(end).replace(tzinfo=UTC)
        expected[f"row {number}"] = period_end > NOW and invoice in ("", "NULL")
    return write_csv(tmp_path / "periods.csv", rows), expected


@pytest.mark.parametrize("columnar", [True, False], ids=["columnar", "row by row"])
def test_each_row_is_provisional_exactly_as_its_own_period_and_invoice_say(
    tmp_path, monkeypatch, caplog, columnar
):
    path, expected = provisional_by_description(tmp_path)
    assert set(expected.values()) == {True, False}
    if not columnar:
        monkeypatch.setattr(FocusImporter, "column_batches", refuse)
    with (
        time_machine.travel(NOW, tick=False),
        caplog.at_level(logging.INFO, logger="billing.loader"),
    ):
        code, result = run_import(path, source="periods", format="focus")
    assert (code, result["status"]) == (0, "imported"), result["error"]
    assert any(GAVE_WAY in message for message in caplog.messages) != columnar
    loaded = dict(
        CostRecord.objects.values_list("charge_description", "is_provisional")
    )
    assert loaded == expected
