"""The Google Cloud billing export from a file (`billing_import`, format `gcp`):
newline-delimited JSON as `bq extract` writes it and a flattened CSV, each row made by
the same `row_from_bigquery` as a sync (tests/data/gcp/)."""

import gzip
import json
from decimal import Decimal
from functools import partial
from pathlib import Path

import pytest

from billing.importers import importer_for
from billing.importers.gcp_billing import row_from_bigquery
from billing.models import BillingSource, CostRecord
from tests.billing import importing
from tests.billing.importing import as_decimals

pytestmark = pytest.mark.django_db

DATA = Path(__file__).resolve().parents[1] / "data" / "gcp"
NDJSON = DATA / "standard_export.ndjson"
CSV = DATA / "detailed_export.csv"

run_import = partial(importing.run_import, source="GCP billing")


def synced_rows(name: str) -> list[dict]:
    """The rows a sync makes of the same records, as the query returns them."""
    records = json.loads((DATA / name).read_text())
    return [row_from_bigquery(record) for record in records]


def billed_by_month(rows: list[dict]) -> dict[str, Decimal]:
    months: dict[str, Decimal] = {}
    for row in rows:
        month = f"{row['billing_period_start']:%Y-%m}"
        months[month] = months.get(month, Decimal(0)) + row["billed_cost"]
    return months


def gzipped(tmp_path: Path) -> Path:
    path = tmp_path / "export.ndjson.gz"
    path.write_bytes(gzip.compress(NDJSON.read_bytes()))
    return path


FILES = {
    "bq extract NDJSON": (lambda tmp_path: NDJSON, "standard_export_rows.json"),
    "gzip NDJSON": (gzipped, "standard_export_rows.json"),
    "bq query JSON list": (
        lambda tmp_path: DATA / "standard_export_rows.json",
        "standard_export_rows.json",
    ),
    "flattened CSV": (lambda tmp_path: CSV, "detailed_export_rows.json"),
}


@pytest.mark.parametrize(("make", "recorded"), FILES.values(), ids=FILES.keys())
def test_a_file_is_detected_and_makes_the_rows_a_sync_makes(tmp_path, make, recorded):
    path = make(tmp_path)
    importer = importer_for(path)
    assert importer.name == "gcp"
    assert list(importer.rows(path)) == synced_rows(recorded)


@pytest.mark.parametrize(("make", "recorded"), FILES.values(), ids=FILES.keys())
def test_a_file_imports_with_exact_totals_into_a_gcp_source(tmp_path, make, recorded):
    expected = synced_rows(recorded)
    code, result = run_import(make(tmp_path))
    assert code == 0, result["error"]
    assert result["rows"] == len(expected) == CostRecord.objects.count()
    currency = expected[0]["billing_currency"]
    assert as_decimals(result["billed"]) == {
        currency: sum((row["billed_cost"] for row in expected), Decimal(0))
    }
    assert result["billing_periods"] == sorted(billed_by_month(expected))
    assert BillingSource.objects.get().kind == "gcp"


def test_gcp_is_a_format_a_file_can_be_named_in(tmp_path):
    code, result = run_import(CSV, format="gcp")
    assert (code, result["rows"]) == (0, 6)


def test_a_bad_value_in_ndjson_is_named_by_file_line_and_field(tmp_path):
    lines = NDJSON.read_text().splitlines()
    record = json.loads(lines[2])
    record["cost"] = "abc"
    lines[2] = json.dumps(record)
    path = tmp_path / "export.ndjson"
    path.write_text("\n".join(lines) + "\n")
    code, result = run_import(path)
    assert code == 1
    assert result["error"] == "export.ndjson, row 3, column cost: 'abc' is not a number"
    assert not CostRecord.objects.exists()


def test_a_bad_value_in_csv_is_named_by_file_row_and_column_as_written(tmp_path):
    text = CSV.read_text().replace("2026-09-25 13:00:00 UTC", "later", 1)
    path = tmp_path / "export.csv"
    path.write_text(text)
    code, result = run_import(path)
    assert code == 1
    assert result["error"] == (
        "export.csv, row 3, column usage_end_time: 'later' is not a time"
    )


def test_a_repeated_field_that_is_not_json_is_refused_by_row_and_column(tmp_path):
    lines = CSV.read_text().splitlines()
    lines[1] = lines[1].replace('"[{""name""', '"{""name""', 1)
    path = tmp_path / "export.csv"
    path.write_text("\n".join(lines) + "\n")
    code, result = run_import(path)
    assert code == 1
    assert result["error"].startswith("export.csv, row 2, column credits: ")
    assert result["error"].endswith("is not a JSON list")
