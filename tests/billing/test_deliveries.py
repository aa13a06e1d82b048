"""Deliveries: the files of one export imported together, so that a month delivered in
several files keeps every file's rows; what an import replaces, said in money; the
same data refused under a second source; and the edges (a failed import's new source,
a month without charges)."""

import csv
import io
import json
import zipfile
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from billing import loader
from billing.deliveries import file_sha256
from billing.importers import IMPORTERS
from billing.importers.base import new_row
from billing.models import BillingSource, CostRecord, ImportRun
from budgets.alerts.rules import Rules, stale_sources
from tests.billing.importing import as_decimals, column_sums, read_csv
from tests.data import AWS_CUR_LEGACY, FOCUS_REAL

pytestmark = pytest.mark.django_db(transaction=True)

ROWS = read_csv(FOCUS_REAL)
HEADER = list(ROWS[0])
# The first half of the real sample holds 29% of its billed cost.
PART_1, PART_2 = ROWS[:500], ROWS[500:]
# Each row's account, period and sub-account: what an import restates.
KEY = ("BillingPeriodStart", "BillingAccountId", "SubAccountId")


def run_delivery(*paths: Path, source: str = "focus", **options) -> tuple[int, dict]:
    """The exit code of `billing_import FILE [FILE ...] --json` and its JSON; options
    are given as on the command line, so that the command parses them."""
    out = io.StringIO()
    flags = [
        f"--{name.replace('_', '-')}" if value is True else f"--{name}={value}"
        for name, value in options.items()
    ]
    try:
        call_command(
            "billing_import",
            *map(str, paths),
            *flags,
            source=source,
            json=True,
            stdout=out,
        )
        code = 0
    except CommandError as error:
        code = error.returncode
    return code, json.loads(out.getvalue())


def write_rows(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as text:
        writer = csv.DictWriter(text, fieldnames=HEADER)
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def parts(tmp_path) -> tuple[Path, Path]:
    """The real FOCUS sample split in two files, as an exporter splits a month."""
    folder = tmp_path / "2024-09"
    folder.mkdir()
    return (
        write_rows(folder / "part-1.csv", PART_1),
        write_rows(folder / "part-2.csv", PART_2),
    )


def billed(rows: list[dict[str, str]]) -> dict[str, Decimal]:
    return column_sums(rows, "BilledCost", "BillingCurrency")


def effective(rows: list[dict[str, str]]) -> dict[str, Decimal]:
    return column_sums(rows, "EffectiveCost", "BillingCurrency")


def stored_billed() -> dict[str, Decimal]:
    totals: dict[str, Decimal] = {}
    for currency, amount in CostRecord.objects.values_list(
        "billing_currency", "billed_cost"
    ):
        totals[currency] = totals.get(currency, Decimal(0)) + amount
    return totals


# A month in several files ------------------------------------------------------


def test_a_part_imported_alone_replaces_the_other_parts_rows(parts):
    """What happens when the parts of a month are imported one by one: the second
    replaces the period, so the first part's rows are gone. The import says so."""
    run_delivery(parts[0])
    code, result = run_delivery(parts[1])
    assert (code, result["status"]) == (0, "imported")
    assert CostRecord.objects.count() == len(PART_2)
    assert result["replaced"] == {
        "rows": len(PART_1),
        "billed": {c: str(a) for c, a in billed(PART_1).items()},
        "effective": {c: str(a) for c, a in effective(PART_1).items()},
    }


def test_a_delivery_of_both_parts_keeps_every_row_of_the_month(parts):
    code, result = run_delivery(*parts)
    assert (code, result["status"]) == (0, "imported"), result["error"]
    assert result["rows"] == len(ROWS) == CostRecord.objects.count()
    assert as_decimals(result["billed"]) == billed(ROWS) == stored_billed()
    assert as_decimals(result["effective"]) == effective(ROWS)
    assert result["warnings"] == []
    run = ImportRun.objects.get()
    assert [file["name"] for file in run.files] == ["part-1.csv", "part-2.csv"]
    assert run.file_name == "part-1.csv, part-2.csv"


def test_the_same_delivery_again_in_another_order_or_shape_is_unchanged(
    parts, tmp_path
):
    run_delivery(*parts)
    ids = set(CostRecord.objects.values_list("pk", flat=True))
    archive = tmp_path / "delivery.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for part in parts:
            zipped.write(part, f"export/{part.name}")
    for again in ([parts[1], parts[0]], [parts[0].parent], [archive]):
        code, result = run_delivery(*again)
        assert (code, result["status"]) == (0, "unchanged"), again
        assert result["replaced"] == {"rows": 0, "billed": {}, "effective": {}}
    assert set(CostRecord.objects.values_list("pk", flat=True)) == ids


def test_a_folder_is_a_delivery_of_its_export_files(parts):
    (parts[0].parent / "manifest.json").write_text("{}")
    (parts[0].parent / "notes.txt").write_text("not an export")
    code, result = run_delivery(parts[0].parent)
    assert (code, result["rows"]) == (0, len(ROWS)), result["error"]
    names = [file["name"] for file in ImportRun.objects.get().files]
    assert names == ["2024-09/part-1.csv", "2024-09/part-2.csv"]


def test_a_zip_is_a_delivery_of_its_export_files(parts, tmp_path):
    archive = tmp_path / "month.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.write(parts[1], "b/part-2.csv")
        zipped.write(parts[0], "a/part-1.csv")
        zipped.writestr("a/Spendtracker-Manifest.json", "{}")
    code, result = run_delivery(archive)
    assert (code, result["rows"]) == (0, len(ROWS)), result["error"]
    assert as_decimals(result["billed"]) == billed(ROWS)
    names = [file["name"] for file in ImportRun.objects.get().files]
    assert names == ["month.zip/a/part-1.csv", "month.zip/b/part-2.csv"]


def test_a_folder_without_export_files_is_refused_with_its_name(tmp_path):
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    code, result = run_delivery(empty)
    assert code == 1
    assert result["error"].startswith("nothing-here: holds no export files")


def test_the_same_file_twice_in_a_delivery_is_refused(parts, tmp_path):
    copy = tmp_path / "copy.csv"
    copy.write_bytes(parts[0].read_bytes())
    code, result = run_delivery(parts[0], copy)
    assert code == 1
    assert result["error"] == (
        "copy.csv: is the same file as part-1.csv: a delivery takes each file once"
    )
    assert not CostRecord.objects.exists()


def test_files_of_two_formats_are_refused_naming_the_odd_one(parts):
    code, result = run_delivery(parts[0], AWS_CUR_LEGACY)
    assert code == 1
    assert result["error"].startswith(
        f"{AWS_CUR_LEGACY.name}: is an AWS Cost and Usage Report file, but part-1.csv "
        "is a FOCUS export file"
    )
    assert not CostRecord.objects.exists()


def test_each_focus_file_of_a_delivery_takes_the_columnar_path(
    parts, monkeypatch, caplog
):
    loads = []
    columnar = loader.cost_record_batches_load

    def counted(batches, **ids):
        loads.append(ids["import_run_id"])
        return columnar(batches, **ids)

    monkeypatch.setattr(loader, "cost_record_batches_load", counted)
    code, result = run_delivery(*parts)
    assert (code, result["rows"]) == (0, len(ROWS))
    assert len(loads) == 2
    assert "read row by row" not in caplog.text


class WholeDeliveryImporter:
    """An importer that reads a delivery as a whole, as the Azure importer pairs its
    actual and amortised datasets: one row per file, named after it."""

    name = "focus"
    seen: list[list[str]] = []

    def __init__(self, *, currency=None) -> None:
        self.warnings = ["read as a whole"]

    @staticmethod
    def accepts(header: list[str]) -> bool:
        return header == ["whole"]

    def rows_of_delivery(self, paths: list[Path]):
        self.seen.append([path.name for path in paths])
        for number, path in enumerate(paths, start=1):
            start = datetime(2026, 1, number, tzinfo=UTC)
            yield new_row() | {
                "billing_account_id": path.name,
                "billing_currency": "EUR",
                "charge_category": "Usage",
                "provider_name": "Whole",
                "billing_period_start": datetime(2026, 1, 1, tzinfo=UTC),
                "billing_period_end": datetime(2026, 2, 1, tzinfo=UTC),
                "charge_period_start": start,
                "charge_period_end": start + timedelta(hours=1),
                **dict.fromkeys(
                    ("billed_cost", "effective_cost", "list_cost", "contracted_cost"),
                    Decimal("1.5"),
                ),
            }


def test_an_importer_that_reads_a_delivery_whole_gets_all_its_files(
    tmp_path, monkeypatch
):
    monkeypatch.setattr("billing.importers.FocusImporter", WholeDeliveryImporter)
    monkeypatch.setitem(IMPORTERS, "focus", WholeDeliveryImporter)
    WholeDeliveryImporter.seen = []
    for name in ("actual.csv", "amortised.csv"):
        (tmp_path / name).write_text(f"whole\n{name}\n")
    code, result = run_delivery(tmp_path / "actual.csv", tmp_path / "amortised.csv")
    assert code == 0, result["error"]
    assert (result["rows"], result["billed"]) == (2, {"EUR": "3.0"})
    assert WholeDeliveryImporter.seen == [["actual.csv", "amortised.csv"]]
    assert result["warnings"] == ["read as a whole"]


# What an import replaces, in money ---------------------------------------------


def lost(rows: list[dict[str, str]], kept: list[dict[str, str]]) -> list[dict]:
    """The rows whose account, period and sub-account `kept` does not restate."""
    restated = {tuple(row[k] for k in KEY) for row in kept}
    return [row for row in rows if tuple(row[k] for k in KEY) not in restated]


def test_part_two_imported_after_part_one_warns_in_money(parts):
    run_delivery(parts[0])
    code, result = run_delivery(parts[1])
    assert code == 0
    gone = lost(PART_1, PART_2)
    assert gone  # sub-accounts that only part 1 bills
    [warning] = result["warnings"]
    assert warning.startswith(
        f"removed {len(gone)} rows of billing account 1234567890123 for 2024-09 "
        "that this import does not replace (sub-accounts not in this import: "
    )
    assert f"billed {billed(gone)['USD']:f} USD" in warning
    assert f"effective {effective(gone)['USD']:f} USD" in warning
    run = ImportRun.objects.latest("pk")
    assert run.warnings == [warning]
    assert run.replaced["rows"] == len(PART_1)


def test_an_import_without_an_account_the_period_had_names_it_in_money(parts):
    run_delivery(FOCUS_REAL)
    code, result = run_delivery(parts[0])
    assert code == 0
    gone = [row for row in lost(ROWS, PART_1) if row["BillingPeriodStart"] < "2024-10"]
    azure = "/providers/Microsoft.Billing/billingAccounts/8611537"
    warnings = {w.split(" for ")[0]: w for w in result["warnings"]}
    of_azure = [row for row in gone if row["BillingAccountId"] == azure]
    warning = warnings[f"removed {len(of_azure)} rows of billing account {azure}"]
    assert "(the account is not in this import)" in warning
    assert f"billed {billed(of_azure)['USD']} USD" in warning
    oci = warnings["removed 6 rows of billing account 20209880"]
    assert oci.endswith("effective 0.00000000000 USD")  # written out, not 0E-11


def test_a_restated_period_of_the_same_accounts_replaces_without_a_warning(parts):
    run_delivery(*parts)
    code, result = run_delivery(FOCUS_REAL)
    assert (code, result["status"]) == (0, "imported")
    assert result["replaced"]["rows"] == len(ROWS)
    assert result["warnings"] == []


# The same data under two sources -----------------------------------------------


def test_the_same_file_under_a_second_source_is_refused_unless_allowed():
    run_delivery(FOCUS_REAL, source="AWS FOCUS")
    code, result = run_delivery(FOCUS_REAL, source="Finance copy")
    assert code == 1
    assert result["error"].startswith(
        "focus_sample.csv: is already imported into the source 'AWS FOCUS' ("
    )
    assert "allow the overlap (import even if another source holds" in result["error"]
    assert "--" not in result["error"]
    assert CostRecord.objects.count() == len(ROWS)
    assert not BillingSource.objects.filter(name="Finance copy").exists()
    code, result = run_delivery(FOCUS_REAL, source="Finance copy", allow_overlap=True)
    assert (code, result["status"]) == (0, "imported")
    assert CostRecord.objects.count() == 2 * len(ROWS)


def test_an_account_and_period_held_by_another_source_is_refused_unless_allowed(
    parts,
):
    run_delivery(FOCUS_REAL, source="AWS FOCUS")
    code, result = run_delivery(parts[1], source="Finance copy")
    assert code == 1
    assert "is already held by the source 'AWS FOCUS'" in result["error"]
    assert "2024-09" in result["error"]
    assert CostRecord.objects.count() == len(ROWS)
    code, result = run_delivery(parts[1], source="Finance copy", allow_overlap=True)
    assert (code, result["rows"]) == (0, len(PART_2))


def test_a_file_whose_rows_its_source_no_longer_holds_is_not_an_overlap(
    parts, tmp_path
):
    run_delivery(parts[0], source="old")
    empty = write_rows(tmp_path / "empty.csv", [])
    run_delivery(empty, source="old", period="2024-09")  # a later restatement
    code, result = run_delivery(parts[0], source="new")
    assert (code, result["status"]) == (0, "imported"), result["error"]


# Clean edges -------------------------------------------------------------------


def test_a_failed_import_leaves_no_new_source_behind(tmp_path):
    bad = write_rows(tmp_path / "bad.csv", [ROWS[0] | {"BilledCost": "abc"}])
    code, result = run_delivery(bad, source="Brand new")
    assert code == 1
    assert result["source"] == "Brand new"
    assert "bad.csv, row 2, column BilledCost" in result["error"]
    assert not BillingSource.objects.filter(name="Brand new").exists()
    run = ImportRun.objects.get()
    assert (run.source, run.source_name, run.status) == (None, "Brand new", "failed")
    assert run.error == result["error"]


def test_a_failed_import_into_an_existing_source_keeps_it_with_the_error(tmp_path):
    run_delivery(FOCUS_REAL)
    bad = write_rows(tmp_path / "bad.csv", [ROWS[0] | {"BilledCost": "abc"}])
    code, result = run_delivery(bad)
    assert code == 1
    assert BillingSource.objects.get(name="focus").last_error == result["error"]
    assert CostRecord.objects.count() == len(ROWS)


def test_a_header_only_export_needs_its_period(tmp_path):
    empty = write_rows(tmp_path / "empty.csv", [])
    code, result = run_delivery(empty)
    assert code == 1
    assert result["error"] == (
        "empty.csv: has a header but no cost rows; if it is a month without "
        "charges, give its billing month"
    )
    assert not BillingSource.objects.exists()


def test_a_month_without_charges_empties_it_and_keeps_the_source_fresh(
    tmp_path, time_machine
):
    time_machine.move_to(datetime(2024, 11, 3, 9, tzinfo=UTC), tick=False)
    run_delivery(FOCUS_REAL)
    october = [row for row in ROWS if row["BillingPeriodStart"].startswith("2024-10")]
    time_machine.move_to(datetime(2024, 11, 7, 9, tzinfo=UTC), tick=False)
    source = BillingSource.objects.get()
    assert stale_sources([source], Rules(), datetime.now(UTC)) == {source.pk: source}
    empty = write_rows(tmp_path / "empty.csv", [])
    code, result = run_delivery(empty, period="2024-10")
    assert (code, result["status"], result["rows"]) == (0, "imported", 0)
    assert result["billing_periods"] == ["2024-10"]
    assert result["replaced"]["rows"] == len(october)
    assert result["replaced"]["billed"] == {"USD": str(billed(october)["USD"])}
    assert not CostRecord.objects.filter(billing_period_start__month=10).exists()
    assert CostRecord.objects.count() == len(ROWS) - len(october)
    source.refresh_from_db()
    assert stale_sources([source], Rules(), datetime.now(UTC)) == {}
    assert source.data_complete_through == datetime(2024, 11, 1, tzinfo=UTC)


def test_a_period_that_is_not_a_month_is_refused_by_the_command(tmp_path):
    with pytest.raises(CommandError, match="'2024-13' is not a month written"):
        call_command("billing_import", str(FOCUS_REAL), "--period=2024-13", source="x")


def test_a_currency_is_passed_to_the_importer_for_files_that_name_none(tmp_path):
    without = [
        {k: v for k, v in row.items() if k != "BillingCurrency"} for row in ROWS[:10]
    ]
    path = tmp_path / "no-currency.csv"
    with path.open("w", encoding="utf-8", newline="") as text:
        writer = csv.DictWriter(text, fieldnames=list(without[0]))
        writer.writeheader()
        writer.writerows(without)
    code, result = run_delivery(path, currency="eur")
    assert code == 0, result["error"]
    assert list(result["billed"]) == ["EUR"]
    assert ImportRun.objects.get().currency == "EUR"


def test_a_file_imported_before_deliveries_were_kept_counts_as_held():
    legacy = BillingSource.objects.create(name="Legacy", kind="focus")
    ImportRun.objects.create(
        source=legacy,
        status=ImportRun.Status.IMPORTED,
        file_name=FOCUS_REAL.name,
        checksum=file_sha256(FOCUS_REAL),
        billing_periods=["2024-09", "2024-10"],
    )
    code, result = run_delivery(FOCUS_REAL, source="new")
    assert code == 1
    assert "is already imported into the source 'Legacy'" in result["error"]
