"""Azure cost details exports (native, EA and MCA) through `billing_import`: every
cost counted once and exactly, commitments split into billed and effective spend as
Microsoft's FOCUS conversion does, bad input named and the database left as it was."""

from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from pathlib import Path

import pytest

from billing.importers.azure import AzureCostDetailsImporter
from billing.importers.base import CsvFile, ImportFailure
from billing.importers.focus import FocusImporter
from billing.models import BillingSource, CostRecord, DailyCost, ImportRun
from billing.services import billing_import_file
from tests.billing import importing
from tests.billing.importing import as_decimals, column_sums, read_csv, write_csv
from tests.data import DATA, FOCUS_REAL, SAMPLES

pytestmark = pytest.mark.django_db(transaction=True)

AZURE = SAMPLES / "native-azure-cost-details"
EA_EXPORT = AZURE / "focus_converters__sample-anonymous-ea-export-dataset.csv"
EA_ACTUAL = AZURE / "finops-toolkit__EA_ActualCost_Small.csv"
EA_AMORTIZED = AZURE / "finops-toolkit__EA_AmortizedCost_Small.csv"
# One period as both datasets, made from the samples (tests/data/azure/README.md): the
# names say nothing of which is which.
RESERVATION_ACTUAL = DATA / "azure" / "ea_reservation_export_1.csv"
RESERVATION_AMORTIZED = DATA / "azure" / "ea_reservation_export_2.csv"
PURCHASE = Decimal("22.19184")  # the reservation's monthly payment
EFFECTIVE_ALONE = "effective cost leaves out reserved-instance and savings plan usage"
BILLED_ALONE = "billed cost leaves out reservation and savings plan purchases"

# Each real sample, with the columns its own schema variant names cost and currency.
REAL_SAMPLES = [
    pytest.param(EA_EXPORT, "CostInBillingCurrency", "BillingCurrencyCode", id="ea"),
    pytest.param(EA_ACTUAL, "Cost", "BillingCurrency", id="ea-actual-cost"),
]

# Columns of a Microsoft Customer Agreement cost details export, as MCA spells them.
MCA_HEADER = [
    "invoiceId",
    "billingAccountId",
    "billingAccountName",
    "billingProfileId",
    "billingProfileName",
    "billingPeriodEndDate",
    "billingPeriodStartDate",
    "date",
    "meterCategory",
    "ProductId",
    "ProductName",
    "SubscriptionId",
    "subscriptionName",
    "ResourceId",
    "resourceLocation",
    "quantity",
    "unitOfMeasure",
    "chargeType",
    "billingCurrency",
    "costInBillingCurrency",
    "paygCostInBillingCurrency",
    "exchangeRatePricingToBilling",
    "tags",
    "PayGPrice",
    "unitPrice",
    "frequency",
    "pricingModel",
]
MCA_DEFAULTS = {
    "invoiceId": "G012345678",
    "billingAccountId": "a1b2c3d4-0000-0000-0000-000000000000:e5f6_2019-05-31",
    "billingAccountName": "Contoso",
    "billingProfileId": "ABCD-EFGH-XYZ-PGB",
    "billingProfileName": "Contoso ML",
    "billingPeriodEndDate": "2024-03-31",
    "billingPeriodStartDate": "2024-03-01",
    "date": "2024-03-14",
    "meterCategory": "Virtual Machines",
    "ProductId": "DZH318Z0BQ4L",
    "ProductName": "Virtual Machines NCads H100 v5 Series - NC40ads H100 v5",
    "SubscriptionId": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
    "subscriptionName": "llm-finetune",
    "ResourceId": "/subscriptions/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/"
    "resourceGroups/ft/providers/Microsoft.Compute/virtualMachines/gpu-node-1",
    "resourceLocation": "East US",
    "quantity": "10",
    "unitOfMeasure": "1 Hour",
    "chargeType": "Usage",
    "billingCurrency": "EUR",
    "costInBillingCurrency": "63.0123456789",
    "paygCostInBillingCurrency": "70.01",
    "exchangeRatePricingToBilling": "0.9",
    "tags": '"project": "llm-ft-7","team": "research"',
    "PayGPrice": "7.7789",
    "unitPrice": "7.0014",
    "frequency": "UsageBased",
    "pricingModel": "OnDemand",
}


run_import = partial(importing.run_import, source="azure")


def mca_export(path: Path, *rows: dict[str, str]) -> Path:
    return write_csv(path, [MCA_DEFAULTS | row for row in rows], header=MCA_HEADER)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


@pytest.mark.parametrize(("path", "cost", "currency"), REAL_SAMPLES)
def test_a_real_ea_export_bills_exactly_its_cost_column(path, cost, currency):
    code, result = run_import(path)
    assert code == 0, result["error"]
    assert result["status"] == "imported"
    assert result["rows"] == len(read_csv(path)) == CostRecord.objects.count()
    assert result["billing_periods"] == ["2023-09"]
    assert as_decimals(result["billed"]) == column_sums(read_csv(path), cost, currency)
    assert BillingSource.objects.get(name="azure").kind == "azure"


def test_the_ea_sample_totals_its_cad_costs_to_the_last_decimal_when_named_azure():
    _, result = run_import(EA_EXPORT, format="azure")
    assert result["billed"] == {"CAD": "1.26136926506"}
    assert result["effective"] == result["billed"]


def test_tags_written_without_braces_become_a_tag_object():
    run_import(EA_ACTUAL)
    storage = CostRecord.objects.get(resource_name="dbstoragewp6hglwvvrad2")
    assert storage.tags == {
        "CostCenter": "1234",
        "env": "prod",
        "org": "trey",
        "application": "databricks",
        "databricks-environment": "true",
    }
    assert CostRecord.objects.filter(tags__org="trey").count() == 5


def test_a_reservation_purchase_is_billed_in_full_and_left_out_of_effective_spend():
    _, result = run_import(EA_ACTUAL)
    purchase = CostRecord.objects.get(charge_category="Purchase")
    assert purchase.billed_cost == Decimal("3.25")
    assert purchase.effective_cost == 0
    # Its usage states list and contracted cost; the purchase would count it twice.
    assert purchase.list_cost == purchase.contracted_cost == 0
    assert purchase.charge_frequency == "Recurring"
    assert purchase.consumed_quantity is None
    costs = column_sums(read_csv(EA_ACTUAL), "Cost", "BillingCurrency")["USD"]
    assert Decimal(result["effective"]["USD"]) == costs - Decimal("3.25")


def test_us_dates_become_a_one_day_charge_period_in_an_exclusive_billing_month():
    run_import(EA_ACTUAL)
    purchase = CostRecord.objects.get(charge_category="Purchase")  # 09/21/2023
    assert (purchase.charge_period_start, purchase.charge_period_end) == (
        utc(2023, 9, 21),
        utc(2023, 9, 22),
    )
    assert (purchase.billing_period_start, purchase.billing_period_end) == (
        utc(2023, 9, 1),
        utc(2023, 10, 1),
    )


def test_single_digit_us_dates_parse_too():
    run_import(EA_EXPORT)  # Date 9/2/2023, billing period 9/1/2023 to 9/30/2023
    starts = set(CostRecord.objects.values_list("charge_period_start", flat=True))
    assert starts == {utc(2023, 9, 2)}
    ends = set(CostRecord.objects.values_list("billing_period_end", flat=True))
    assert ends == {utc(2023, 10, 1)}


def test_usage_rows_keep_their_meter_subscription_and_list_price():
    run_import(EA_ACTUAL)
    mysql = CostRecord.objects.get(service_name="Azure Database for MySQL")
    assert mysql.provider_name == mysql.invoice_issuer_name == "Microsoft"
    assert mysql.sub_account_id == "64e355d7-997c-491d-b0c1-8414dccfcf42"
    assert mysql.billing_account_id == "8611537"
    assert mysql.region_id == "centralus"
    assert (mysql.consumed_quantity, mysql.consumed_unit) == (24, "1 Hour")
    assert mysql.charge_category == "Usage"
    assert mysql.charge_frequency == "Usage-Based"
    assert mysql.list_cost == Decimal("0.0816") * 24 == mysql.billed_cost


def test_an_mca_export_with_lower_camel_case_headers_imports(tmp_path):
    path = mca_export(
        tmp_path / "mca.csv",
        {},
        {"costInBillingCurrency": "-0.5", "chargeType": "RoundingAdjustment"},
    )
    code, result = run_import(path)
    assert code == 0, result["error"]
    assert result["billed"] == {"EUR": "62.5123456789"}
    gpu = CostRecord.objects.get(charge_category="Usage")
    assert gpu.billing_account_id == "ABCD-EFGH-XYZ-PGB"  # invoiced per profile
    assert gpu.billing_account_name == "Contoso ML"
    assert gpu.invoice_id == "G012345678"
    assert gpu.sku_id == "DZH318Z0BQ4L"
    assert gpu.resource_name == "gpu-node-1"
    assert gpu.region_id == "eastus"
    assert gpu.list_cost == Decimal("70.01")
    assert gpu.contracted_cost == Decimal("7.0014") * 10 * Decimal("0.9")
    assert gpu.tags == {"project": "llm-ft-7", "team": "research"}
    assert gpu.charge_period_start == utc(2024, 3, 14)
    rounding = CostRecord.objects.get(billed_cost=Decimal("-0.5"))
    assert rounding.charge_category == "Adjustment"


def test_an_amortised_export_moves_commitment_cost_from_billed_to_effective(tmp_path):
    reservation = {"pricingModel": "Reservation", "PayGPrice": "0"}
    path = mca_export(
        tmp_path / "amortized.csv",
        {"costInBillingCurrency": "2.5"},
        reservation | {"costInBillingCurrency": "1.75"},
        reservation
        | {"costInBillingCurrency": "0.25", "chargeType": "UnusedReservation"},
    )
    code, result = run_import(path)
    assert code == 0, result["error"]
    assert as_decimals(result["billed"]) == {"EUR": Decimal("2.5")}
    assert as_decimals(result["effective"]) == {"EUR": Decimal("4.5")}
    unused = CostRecord.objects.get(effective_cost=Decimal("0.25"))
    assert (unused.charge_category, unused.billed_cost) == ("Usage", 0)


def test_a_reservation_refund_is_a_purchase_correction(tmp_path):
    path = mca_export(
        tmp_path / "refund.csv",
        {
            "chargeType": "Refund",
            "pricingModel": "Reservation",
            "costInBillingCurrency": "-120",
            "frequency": "OneTime",
        },
    )
    code, result = run_import(path)
    assert code == 0, result["error"]
    refund = CostRecord.objects.get()
    assert refund.charge_category == "Purchase"
    assert refund.charge_class == "Correction"
    assert refund.charge_frequency == "One-Time"
    assert (refund.billed_cost, refund.effective_cost) == (-120, 0)


def test_auto_detection_tells_azure_and_focus_exports_apart():
    azure_headers = [CsvFile(EA_EXPORT).header(), CsvFile(EA_ACTUAL).header()]
    focus_header = CsvFile(FOCUS_REAL).header()
    for header in azure_headers:
        assert AzureCostDetailsImporter.accepts(header)
        assert not FocusImporter.accepts(header)
    assert FocusImporter.accepts(focus_header)
    assert not AzureCostDetailsImporter.accepts(focus_header)
    assert AzureCostDetailsImporter.accepts(MCA_HEADER)
    # Azure's own FOCUS export carries Azure names as x_ columns: it stays FOCUS.
    assert not AzureCostDetailsImporter.accepts(
        [*focus_header, "x_SkuMeterCategory", "ChargeType", "Date"]
    )


def test_a_focus_file_forced_through_the_azure_format_names_the_missing_columns():
    code, result = run_import(FOCUS_REAL, format="azure")
    assert code == 1
    assert result["error"] == (
        "focus_sample.csv: is not an Azure cost details export: missing column "
        "CostInBillingCurrency, Date, BillingPeriodStartDate, BillingPeriodEndDate, "
        "ChargeType"
    )


def sample_with(tmp_path: Path, name: str, row: int, **changes: str) -> Path:
    """The toolkit sample with one data row (as a spreadsheet numbers it) changed."""
    header = CsvFile(EA_ACTUAL).header()
    rows = read_csv(EA_ACTUAL)
    rows[row - 2] |= changes
    return write_csv(tmp_path / name, rows, header=header)


@pytest.mark.parametrize(
    ("row", "changes", "message"),
    [
        (
            3,
            {"Date": "31/09/2023"},
            "bad.csv, row 3, column Date: '31/09/2023' is not a date",
        ),
        (4, {"Cost": "1,2,3"}, "bad.csv, row 4, column Cost: '1,2,3' is not a number"),
        (
            5,
            {"Cost": ""},
            "bad.csv, row 5, column Cost: is empty but a cost is required",
        ),
        (4, {"Cost": "NaN"}, "bad.csv, row 4, column Cost: 'NaN' is not a number"),
        (
            4,
            {"Quantity": "1e30"},
            "bad.csv, row 4, column Quantity: '1e30' is too large",
        ),
        (
            6,
            {"BillingCurrency": "US Dollar"},
            "bad.csv, row 6, column BillingCurrency: 'US DOLLAR' is not an ISO 4217",
        ),
        (7, {"ChargeType": "NULL"}, "bad.csv, row 7, column ChargeType: is empty"),
        (
            8,
            {"BillingPeriodEndDate": "08/31/2023"},
            "bad.csv, row 8, column BillingPeriodEndDate: is before",
        ),
        (
            9,
            {"Tags": '"env": prod'},
            "bad.csv, row 9, column Tags: '\"env\": prod' is not a JSON object",
        ),
    ],
)
def test_bad_input_fails_naming_file_row_and_column_and_keeps_what_was_there(
    tmp_path, row, changes, message
):
    run_import(EA_ACTUAL)
    before = set(CostRecord.objects.values_list("pk", flat=True))
    daily = set(DailyCost.objects.values_list("pk", flat=True))
    code, result = run_import(sample_with(tmp_path, "bad.csv", row, **changes))
    assert code == 1
    assert result["status"] == "failed"
    assert message in result["error"]
    assert set(CostRecord.objects.values_list("pk", flat=True)) == before
    assert set(DailyCost.objects.values_list("pk", flat=True)) == daily
    assert ImportRun.objects.latest("started_at").error == result["error"]


def read_delivery(*paths: Path) -> tuple[list[dict], list[str]]:
    importer = AzureCostDetailsImporter()
    rows = list(importer.rows_of_delivery(list(paths)))
    return rows, importer.warnings


def total(rows: list[dict], measure: str) -> Decimal:
    return sum((row[measure] for row in rows), Decimal(0))


def file_cost(path: Path) -> Decimal:
    """A file's own total of its cost column, parsed independently of the importer."""
    return column_sums(read_csv(path), "Cost", "BillingCurrency")["USD"]


@pytest.mark.parametrize(
    "paths",
    [
        pytest.param((RESERVATION_ACTUAL, RESERVATION_AMORTIZED), id="actual-first"),
        pytest.param((RESERVATION_AMORTIZED, RESERVATION_ACTUAL), id="amortised-first"),
    ],
)
def test_a_reservation_and_the_usage_it_covers_count_once_in_each_measure(paths):
    rows, warnings = read_delivery(*paths)

    assert warnings == []
    # Billed cost is the actual dataset's, effective cost the amortised one's.
    assert total(rows, "billed_cost") == file_cost(RESERVATION_ACTUAL)
    assert total(rows, "effective_cost") == file_cost(RESERVATION_AMORTIZED)
    (purchase,) = [row for row in rows if row["charge_category"] == "Purchase"]
    assert (purchase["billed_cost"], purchase["effective_cost"]) == (PURCHASE, 0)
    # List and contracted cost are the covered usage's: the purchase adds nothing.
    assert (purchase["list_cost"], purchase["contracted_cost"]) == (0, 0)
    reserved_gpu_usage = [row for row in rows if row["resource_name"].startswith("aks")]
    assert [
        (row["billed_cost"], row["effective_cost"]) for row in reserved_gpu_usage
    ] == [(0, Decimal("0.493152"))]
    on_demand = [
        row["resource_name"]
        for row in rows
        if row["billed_cost"] in (Decimal("2.64"), Decimal("1.9584"))
    ]
    assert sorted(on_demand) == [
        "OnDemadCapRes_Test_USSouthCentralZonal",
        "umq-umqoi3-db",
    ]


def test_the_actual_dataset_alone_bills_in_full_and_warns_of_effective_cost():
    rows, warnings = read_delivery(RESERVATION_ACTUAL)

    assert len(rows) == len(read_csv(RESERVATION_ACTUAL))
    assert total(rows, "billed_cost") == file_cost(RESERVATION_ACTUAL)
    assert total(rows, "effective_cost") == file_cost(RESERVATION_ACTUAL) - PURCHASE
    assert len(warnings) == 1
    assert warnings[0].startswith(
        "ea_reservation_export_1.csv: the actual cost dataset"
    )
    assert EFFECTIVE_ALONE in warnings[0]


def test_the_amortised_dataset_alone_gives_effective_cost_and_warns_of_billed_cost():
    rows, warnings = read_delivery(RESERVATION_AMORTIZED)

    assert total(rows, "effective_cost") == file_cost(RESERVATION_AMORTIZED)
    assert total(rows, "billed_cost") == Decimal("2.64") + Decimal("1.9584")
    assert len(warnings) == 1
    assert warnings[0].startswith("ea_reservation_export_2.csv: the amortised cost")
    assert BILLED_ALONE in warnings[0]


@pytest.mark.parametrize(
    ("path", "warning"),
    [
        pytest.param(EA_ACTUAL, EFFECTIVE_ALONE, id="actual"),
        pytest.param(EA_AMORTIZED, BILLED_ALONE, id="amortised"),
        pytest.param(EA_EXPORT, None, id="no-commitments"),
    ],
)
def test_a_real_export_alone_says_which_measure_it_cannot_give(path, warning):
    _, warnings = read_delivery(path)
    assert [warning in text for text in warnings] == ([True] if warning else [])


@pytest.mark.parametrize(
    ("path", "warning"),
    [
        pytest.param(RESERVATION_ACTUAL, EFFECTIVE_ALONE, id="actual"),
        pytest.param(RESERVATION_AMORTIZED, BILLED_ALONE, id="amortised"),
    ],
)
def test_an_import_of_one_dataset_alone_carries_its_warning(path, warning):
    outcome = billing_import_file(path=path, source_name="azure")

    result = outcome.as_json()
    assert result["status"] == "imported", result["error"]
    assert [warning in text for text in result["warnings"]] == [True]


def on_demand_part(path: Path) -> Path:
    """Rows of the reservation delivery without a commitment: either dataset's."""
    rows = read_csv(RESERVATION_ACTUAL)[2:]
    return write_csv(path, rows, header=CsvFile(RESERVATION_ACTUAL).header())


def test_a_file_without_commitments_beside_told_apart_datasets_is_refused(tmp_path):
    part = on_demand_part(tmp_path / "part_0_0002.csv")

    with pytest.raises(ImportFailure) as refused:
        read_delivery(RESERVATION_ACTUAL, RESERVATION_AMORTIZED, part)

    assert str(refused.value).startswith("part_0_0002.csv: has no reservation")
    assert 'put "actual" or "amortized" in its name' in str(refused.value)


def test_files_without_commitments_are_told_apart_by_their_names(tmp_path):
    actual = on_demand_part(tmp_path / "costs-ActualCost.csv")
    amortized = on_demand_part(tmp_path / "costs-AmortizedCost.csv")

    rows, warnings = read_delivery(actual, amortized)

    assert warnings == []
    assert total(rows, "billed_cost") == file_cost(amortized)  # once, not twice


def test_parts_of_an_export_without_commitments_all_count(tmp_path):
    header = CsvFile(EA_EXPORT).header()
    rows = read_csv(EA_EXPORT)
    first = write_csv(tmp_path / "part_0_0001.csv", rows[:10], header=header)
    second = write_csv(tmp_path / "part_0_0002.csv", rows[10:], header=header)

    loaded, warnings = read_delivery(first, second)

    assert warnings == []
    assert len(loaded) == len(rows)
    whole = list(AzureCostDetailsImporter().rows(EA_EXPORT))
    assert total(loaded, "billed_cost") == total(whole, "billed_cost")
