"""The invoice template: the documented example imports to the cent, and a mistyped
invoice is refused naming file, row and column, leaving the database as it was."""

from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from pathlib import Path

import pytest

from billing.importers import importer_for
from billing.models import BillingSource, CostRecord, DailyCost, ImportRun
from projects.models import AllocationRule
from tests.billing import importing
from tests.billing.importing import as_decimals, column_sums, read_csv, total
from tests.conftest import make_run

pytestmark = pytest.mark.django_db(transaction=True)

TEMPLATE = Path(__file__).resolve().parents[2] / "docs" / "invoice-template.csv"
SOURCE = "GPU invoices"


run_import = partial(importing.run_import, source=SOURCE)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def test_the_template_header_is_detected_as_an_invoice():
    assert importer_for(TEMPLATE).name == "invoice-csv"


def test_the_template_example_imports_with_exact_totals():
    code, result = run_import(TEMPLATE)
    assert code == 0, result["error"]
    assert (result["status"], result["rows"]) == ("imported", 2)
    assert result["billing_periods"] == ["2026-01"]
    assert result["billed"] == {"USD": "17198.08"}
    assert as_decimals(result["billed"]) == column_sums(
        read_csv(TEMPLATE), "amount", "currency"
    )
    assert result["effective"] == result["billed"]
    assert total(CostRecord.objects) == Decimal("17198.08")
    assert total(DailyCost.objects, "effective_cost") == Decimal("17198.08")
    assert total(DailyCost.objects, "gpu_hours") == Decimal("3584")
    assert BillingSource.objects.get(name=SOURCE).kind == "invoice-csv"


def test_each_line_becomes_a_usage_row_over_its_inclusive_period():
    run_import(TEMPLATE)
    coreweave = CostRecord.objects.get(provider_name="CoreWeave")
    assert coreweave.invoice_id == "CW-INV-88213"
    assert coreweave.charge_category == "Usage"
    assert coreweave.service_name == "GPU compute"
    assert coreweave.resource_type == "H100 80GB HGX"
    assert (coreweave.consumed_quantity, coreweave.consumed_unit) == (2048, "GPU-Hours")
    assert coreweave.charge_description.startswith("HGX H100 8-GPU nodes")
    # The period ends on 4 February inclusive; the billing month is the start's.
    assert (coreweave.charge_period_start, coreweave.charge_period_end) == (
        utc(2026, 1, 5),
        utc(2026, 2, 5),
    )
    assert (coreweave.billing_period_start, coreweave.billing_period_end) == (
        utc(2026, 1, 1),
        utc(2026, 2, 1),
    )
    costs = {coreweave.billed_cost, coreweave.effective_cost}
    costs |= {coreweave.list_cost, coreweave.contracted_cost}
    assert costs == {Decimal("12605.44")}


def test_project_and_run_become_tags_that_a_tag_rule_allocates(world):
    run = make_run(world.project, external_id="sft-run-3")
    AllocationRule.objects.create(
        project=world.project,
        match_on=AllocationRule.MatchOn.TAG,
        tag_key="project",
        value="llama-sft",
        run_tag_key="training_run",
    )
    code, result = run_import(TEMPLATE)
    lambda_line = CostRecord.objects.get(provider_name="Lambda")
    assert lambda_line.tags == {"project": "llama-sft", "training_run": "sft-run-3"}
    assert (lambda_line.project, lambda_line.training_run) == (world.project, run)
    assert CostRecord.objects.get(provider_name="CoreWeave").tags == {
        "project": "pretrain-7b"
    }
    # No rule names pretrain-7b: its line is shown as unallocated, never dropped.
    assert result["unallocated"] == {"USD": "12605.44"}
    assert total(DailyCost.objects.filter(project=world.project)) == Decimal("4592.64")


def test_a_line_without_gpu_hours_has_no_consumed_quantity(tmp_path):
    text = TEMPLATE.read_text(encoding="utf-8").replace(",1536,", ",,", 1)
    code, result = run_import(write(tmp_path, "storage.csv", text))
    assert code == 0, result["error"]
    lambda_line = CostRecord.objects.get(provider_name="Lambda")
    assert (lambda_line.consumed_quantity, lambda_line.consumed_unit) == (None, "")


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


TEXT = TEMPLATE.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "missing-column.csv",
            TEXT.replace(",currency", "", 1),
            "missing-column.csv: is not an invoice template: missing column currency",
        ),
        (
            "bad-amount.csv",
            TEXT.replace(",12605.44,", ",12.605.44,", 1),
            "bad-amount.csv, row 3, column amount: '12.605.44' is not a number",
        ),
        (
            "empty-amount.csv",
            TEXT.replace(",4592.64,", ",,", 1),
            "empty-amount.csv, row 2, column amount: is empty but a cost is required",
        ),
        (
            "backwards.csv",
            TEXT.replace("2026-01-01,2026-01-31", "2026-01-31,2026-01-01", 1),
            "backwards.csv, row 2, column period_end: is before period_start",
        ),
        (
            "currency.csv",
            TEXT.replace(",USD,", ",USX,", 1),
            "currency.csv, row 2, column currency: 'USX' is not an ISO 4217 "
            "currency code",
        ),
        (
            "us-date.csv",
            TEXT.replace("2026-01-05", "01/05/2026", 1),
            "us-date.csv, row 3, column period_start: '01/05/2026' is not a "
            "YYYY-MM-DD date",
        ),
        (
            "no-vendor.csv",
            TEXT.replace("\nCoreWeave,", "\n,", 1),
            "no-vendor.csv, row 3, column vendor: is empty",
        ),
    ],
)
def test_bad_input_fails_clearly_and_keeps_what_was_there(
    tmp_path, name, text, message
):
    run_import(TEMPLATE)
    records = set(CostRecord.objects.values_list("pk", flat=True))
    daily = set(DailyCost.objects.values_list("pk", flat=True))
    code, result = run_import(write(tmp_path, name, text))
    assert (code, result["status"]) == (1, "failed")
    assert result["error"] == message
    assert set(CostRecord.objects.values_list("pk", flat=True)) == records
    assert set(DailyCost.objects.values_list("pk", flat=True)) == daily
    assert ImportRun.objects.latest("started_at", "pk").error == message
    assert BillingSource.objects.get(name=SOURCE).last_error == message
