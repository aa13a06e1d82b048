"""AWS Cost and Usage Reports through `billing_import`: the real legacy CUR sample and
CUR 2.0 exports as CSV and Parquet, every cost exact and every line type amortised as
AWS documents."""

import gzip
import json
from datetime import datetime
from decimal import Decimal
from functools import partial
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from billing.importers import parquet
from billing.models import CostRecord, DailyCost
from tests.billing import importing
from tests.billing.importing import as_decimals, column_sums, read_csv, write_csv
from tests.data import SAMPLES

pytestmark = pytest.mark.django_db

LEGACY_CUR = (
    SAMPLES / "native-aws-cur-legacy" / "sample-anonymous-aws-export-dataset.csv"
)


run_import = partial(importing.run_import, source="aws")


def test_the_real_legacy_cur_sample_imports_to_the_last_decimal():
    code, result = run_import(LEGACY_CUR)
    rows = read_csv(LEGACY_CUR)
    assert code == 0, result["error"]
    assert result["rows"] == len(rows) == 1281 == CostRecord.objects.count()
    assert result["billing_periods"] == ["2023-11"]
    expected = column_sums(rows, "lineItem/UnblendedCost", "lineItem/CurrencyCode")
    assert as_decimals(result["billed"]) == expected == {"USD": Decimal("1.6823086974")}
    # Only on-demand usage and tax: amortised and billed cost are the same.
    assert as_decimals(result["effective"]) == expected
    stored = CostRecord.objects.values_list("billed_cost", flat=True)
    assert sum(stored, Decimal(0)) == expected["USD"]


def test_the_legacy_sample_maps_accounts_entities_and_services():
    run_import(LEGACY_CUR)
    record = CostRecord.objects.filter(service_name="AWS Glue").first()
    assert record.provider_name == "AWS"
    assert record.billing_account_id == record.sub_account_id == "123412340534"
    assert record.invoice_issuer_name == "Amazon Web Services Canada, Inc."
    assert record.publisher_name == "Amazon Web Services Canada, Inc."
    assert record.invoice_id == ""
    assert f"{record.billing_period_start:%Y-%m-%d}" == "2023-11-01"
    assert f"{record.billing_period_end:%Y-%m-%d}" == "2023-12-01"
    assert record.charge_period_end > record.charge_period_start


def test_tax_lines_keep_their_tax_category():
    run_import(LEGACY_CUR)
    tax_rows = [r for r in read_csv(LEGACY_CUR) if r["lineItem/LineItemType"] == "Tax"]
    taxes = CostRecord.objects.filter(charge_category="Tax")
    assert taxes.count() == len(tax_rows) == 12
    assert sum(t.billed_cost for t in taxes) == sum(
        Decimal(r["lineItem/UnblendedCost"]) for r in tax_rows
    )
    assert set(taxes.values_list("list_cost", flat=True)) == set(
        taxes.values_list("billed_cost", flat=True)
    )


def test_resource_tag_columns_become_tags_named_as_in_cost_explorer(tmp_path):
    # The published sample activates no tags, so two tag columns are added to it.
    rows = read_csv(LEGACY_CUR)
    for number, row in enumerate(rows):
        row["resourceTags/user:project"] = "llm-pretrain" if number % 2 else ""
        row["resourceTags/aws:createdBy"] = "IAMUser:AIDA:alice" if number == 1 else ""
    code, result = run_import(write_csv(tmp_path / "tagged.csv", rows))
    assert code == 0, result["error"]
    tagged = CostRecord.objects.exclude(tags={})
    assert tagged.count() == len(rows) // 2
    assert CostRecord.objects.filter(
        tags={"project": "llm-pretrain", "aws:createdBy": "IAMUser:AIDA:alice"}
    ).exists()


def test_gzip_reports_import_like_plain_ones(tmp_path):
    packed = tmp_path / "cur.csv.gz"
    packed.write_bytes(gzip.compress(LEGACY_CUR.read_bytes()))
    code, result = run_import(packed)
    assert (code, result["rows"]) == (0, 1281)


# One line of each type a CUR 2.0 export carries, with the amortised cost AWS's rule
# gives it, worked out by hand.
CUR2_LINES = [
    # (line item type, unblended, extra columns, effective cost)
    ("Usage", "32.77", {"pricing_public_on_demand_cost": "32.77"}, "32.77"),
    (
        "DiscountedUsage",
        "0",
        {
            "pricing_public_on_demand_cost": "3.06",
            "reservation_reservation_a_r_n": "arn:aws:ec2:us-east-1:1:reserved/r-1",
            "reservation_effective_cost": "1.93870000001",
        },
        "1.93870000001",
    ),
    (
        "SavingsPlanCoveredUsage",
        "12.24",
        {
            "pricing_public_on_demand_cost": "12.24",
            "savings_plan_savings_plan_effective_cost": "7.34400000005",
        },
        "7.34400000005",
    ),
    ("SavingsPlanNegation", "-12.24", {}, "0"),
    (
        "SavingsPlanRecurringFee",
        "10.0",
        {
            "savings_plan_total_commitment_to_date": "10.0",
            "savings_plan_used_commitment": "7.34400000005",
        },
        "2.65599999995",
    ),
    (
        "RIFee",
        "0.5",
        {
            "reservation_unused_amortized_upfront_fee_for_billing_period": (
                "0.12345678901"
            ),
            "reservation_unused_recurring_fee": "0.2",
        },
        "0.32345678901",
    ),
    (
        "Fee",
        "1000.0",
        {"reservation_reservation_a_r_n": "arn:aws:ec2:us-east-1:1:reserved/r-1"},
        "0",
    ),
    ("SavingsPlanUpfrontFee", "500.0", {}, "0"),
    ("Tax", "4.12345678901", {}, "4.12345678901"),
    ("Credit", "-5.5", {}, "-5.5"),
    (
        "Refund",
        "-1.25",
        {"line_item_usage_start_date": "2025-02-10T00:00:00Z"},
        "-1.25",
    ),
    ("EdpDiscount", "-0.98765432109", {}, "-0.98765432109"),
]
CUR2_BASE = {
    "bill_invoice_id": "",
    "bill_invoicing_entity": "Amazon Web Services, Inc.",
    "bill_billing_entity": "AWS",
    "bill_bill_type": "Anniversary",
    "bill_payer_account_id": "111122223333",
    "bill_payer_account_name": "Research Org",
    "bill_billing_period_start_date": "2025-03-01T00:00:00Z",
    "bill_billing_period_end_date": "2025-04-01T00:00:00Z",
    "line_item_usage_account_id": "444455556666",
    "line_item_usage_account_name": "ml-training",
    "line_item_line_item_type": "",
    "line_item_usage_start_date": "2025-03-02T00:00:00Z",
    "line_item_usage_end_date": "2025-03-02T01:00:00Z",
    "line_item_product_code": "AmazonEC2",
    "line_item_resource_id": "i-0123456789abcdef0",
    "line_item_usage_amount": "1.0",
    "line_item_currency_code": "USD",
    "line_item_unblended_cost": "",
    "line_item_line_item_description": "p5.48xlarge hour",
    "line_item_legal_entity": "Amazon Web Services, Inc.",
    "product_product_name": "Amazon Elastic Compute Cloud",
    "product_region_code": "us-east-1",
    "pricing_unit": "Hrs",
    "pricing_public_on_demand_cost": "",
    "reservation_reservation_a_r_n": "",
    "reservation_effective_cost": "",
    "reservation_unused_amortized_upfront_fee_for_billing_period": "",
    "reservation_unused_recurring_fee": "",
    "savings_plan_savings_plan_effective_cost": "",
    "savings_plan_total_commitment_to_date": "",
    "savings_plan_used_commitment": "",
    "resource_tags": "",
}
NUMERIC = {
    "line_item_usage_amount",
    "line_item_unblended_cost",
    "pricing_public_on_demand_cost",
    "reservation_effective_cost",
    "reservation_unused_amortized_upfront_fee_for_billing_period",
    "reservation_unused_recurring_fee",
    "savings_plan_savings_plan_effective_cost",
    "savings_plan_total_commitment_to_date",
    "savings_plan_used_commitment",
}
TIMESTAMPS = {
    "bill_billing_period_start_date",
    "bill_billing_period_end_date",
    "line_item_usage_start_date",
    "line_item_usage_end_date",
}
USAGE_TAGS = {"user_project": "llm-pretrain", "user_training_run": "run-42"}


def cur2_rows() -> list[dict[str, str]]:
    rows = []
    for line_type, unblended, extra, _ in CUR2_LINES:
        row = CUR2_BASE | extra
        row["line_item_line_item_type"] = line_type
        row["line_item_unblended_cost"] = unblended
        if line_type == "Usage":
            row["resource_tags"] = json.dumps(USAGE_TAGS)
        rows.append(row)
    return rows


def cur2_totals() -> tuple[dict[str, Decimal], dict[str, Decimal]]:
    billed = column_sums(
        cur2_rows(), "line_item_unblended_cost", "line_item_currency_code"
    )
    effective = sum((Decimal(line[3]) for line in CUR2_LINES), Decimal(0))
    return billed, {"USD": effective}


def write_parquet(path: Path, rows: list[dict[str, str]]) -> Path:
    """CUR 2.0 as Data Exports types it: doubles, timestamps and a map of tags."""
    columns: dict[str, pa.Array] = {}
    for name in rows[0]:
        values = [row[name] for row in rows]
        if name in NUMERIC:
            columns[name] = pa.array([float(v) if v else None for v in values])
        elif name in TIMESTAMPS:
            moments = [datetime.fromisoformat(v.replace("Z", "")) for v in values]
            columns[name] = pa.array(moments, type=pa.timestamp("ms"))
        elif name == "resource_tags":
            tags = [list(json.loads(v).items()) if v else None for v in values]
            columns[name] = pa.array(tags, type=pa.map_(pa.string(), pa.string()))
        else:
            columns[name] = pa.array(values, type=pa.string())
    pq.write_table(pa.table(columns), path)
    return path


def test_a_cur2_csv_is_detected_and_imports_with_exact_totals(tmp_path):
    code, result = run_import(write_csv(tmp_path / "cur2.csv", cur2_rows()))
    billed, effective = cur2_totals()
    assert code == 0, result["error"]
    assert result["rows"] == len(CUR2_LINES)
    assert result["billing_periods"] == ["2025-03"]
    assert as_decimals(result["billed"]) == billed
    assert as_decimals(result["effective"]) == effective


def test_a_cur2_parquet_file_imports_with_exact_totals(tmp_path, monkeypatch):
    # Batches smaller than the file show that no row is lost between them.
    monkeypatch.setattr(parquet, "PARQUET_BATCH_ROWS", 5)
    path = write_parquet(tmp_path / "cur2.parquet", cur2_rows())
    code, result = run_import(path, format="aws-cur")
    billed, effective = cur2_totals()
    assert code == 0, result["error"]
    assert result["rows"] == len(CUR2_LINES) == CostRecord.objects.count()
    assert as_decimals(result["billed"]) == billed
    assert as_decimals(result["effective"]) == effective
    usage = CostRecord.objects.get(charge_category="Usage", billed_cost="32.77")
    assert usage.tags == {"project": "llm-pretrain", "training_run": "run-42"}
    assert f"{usage.charge_period_start:%Y-%m-%dT%H:%M}" == "2025-03-02T00:00"


def test_legacy_parquet_tag_columns_become_tags_too(tmp_path):
    rows = cur2_rows()
    for row in rows:
        tags = json.loads(row.pop("resource_tags") or "{}")
        row["resource_tags_user_project"] = tags.get("user_project", "")
    code, result = run_import(
        write_parquet(tmp_path / "legacy.parquet", rows), format="aws-cur"
    )
    assert code == 0, result["error"]
    usage = CostRecord.objects.get(charge_category="Usage", billed_cost="32.77")
    assert usage.tags == {"project": "llm-pretrain"}
    assert CostRecord.objects.filter(tags={}).count() == len(rows) - 1


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_each_line_type_is_amortised_as_aws_documents(tmp_path, suffix):
    write = write_csv if suffix == "csv" else write_parquet
    run_import(write(tmp_path / f"cur2.{suffix}", cur2_rows()), format="aws-cur")
    records = CostRecord.objects.order_by("pk")
    for record, (line_type, unblended, _, effective) in zip(
        records, CUR2_LINES, strict=True
    ):
        assert record.billed_cost == Decimal(unblended), line_type
        assert record.effective_cost == Decimal(effective), line_type


def test_line_types_map_to_focus_categories_and_corrections(tmp_path):
    run_import(write_csv(tmp_path / "cur2.csv", cur2_rows()))
    by_cost = {r.billed_cost: r for r in CostRecord.objects.all()}
    assert by_cost[Decimal("4.12345678901")].charge_category == "Tax"
    assert by_cost[Decimal("-5.5")].charge_category == "Credit"
    refund = by_cost[Decimal("-1.25")]
    assert (refund.charge_category, refund.charge_class) == ("Adjustment", "Correction")
    assert by_cost[Decimal("1000.0")].charge_category == "Purchase"
    assert by_cost[Decimal("-0.98765432109")].charge_category == "Usage"
    discounted = by_cost[Decimal("0")]
    assert discounted.list_cost == discounted.contracted_cost == Decimal("3.06")
    negation = by_cost[Decimal("-12.24")]
    assert negation.list_cost == negation.contracted_cost == Decimal(0)
    usage = by_cost[Decimal("32.77")]
    assert (usage.sub_account_name, usage.billing_account_name) == (
        "ml-training",
        "Research Org",
    )
    assert (usage.consumed_quantity, usage.consumed_unit) == (Decimal("1.0"), "Hrs")
    assert CostRecord.objects.exclude(charge_class="").count() == 1


# What each line adds to list and contracted cost: a commitment once, by the usage it
# covered (at on-demand and contracted prices) and by what of it went unused.
COUNTED_ONCE = {
    # line item type: (ListCost, ContractedCost)
    "Usage": ("32.77", "32.77"),
    "DiscountedUsage": ("3.06", "3.06"),
    "SavingsPlanCoveredUsage": ("12.24", "12.24"),
    "SavingsPlanNegation": ("0", "0"),
    "SavingsPlanRecurringFee": ("2.65599999995", "2.65599999995"),  # unused
    "RIFee": ("0.32345678901", "0.32345678901"),  # unused
    "Fee": ("0", "0"),  # the reservation's upfront fee, spread over its usage
    "SavingsPlanUpfrontFee": ("0", "0"),
    "Tax": ("4.12345678901", "4.12345678901"),
    "Credit": ("-5.5", "-5.5"),
    "Refund": ("-1.25", "-1.25"),
    "EdpDiscount": ("0", "-0.98765432109"),
}


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_list_and_contracted_cost_count_a_commitment_once(tmp_path, suffix):
    write = write_csv if suffix == "csv" else write_parquet
    run_import(write(tmp_path / f"cur2.{suffix}", cur2_rows()), format="aws-cur")
    records = CostRecord.objects.order_by("pk")
    stored = {
        line_type: (record.list_cost, record.contracted_cost)
        for record, (line_type, *_) in zip(records, CUR2_LINES, strict=True)
    }
    assert stored == {
        line_type: (Decimal(listed), Decimal(contracted))
        for line_type, (listed, contracted) in COUNTED_ONCE.items()
    }
    # Each fee keeps what the invoice charges.
    fees = records.filter(charge_category="Purchase")
    assert sorted(fees.values_list("billed_cost", flat=True)) == [
        Decimal("0.5"),
        Decimal("10.0"),
        Decimal("500.0"),
        Decimal("1000.0"),
    ]


def test_a_report_without_the_amortisation_column_its_lines_need_is_refused(tmp_path):
    rows = cur2_rows()
    for row in rows:
        del row["reservation_effective_cost"]
    code, result = run_import(write_csv(tmp_path / "subset.csv", rows))
    assert code == 1
    assert (
        "subset.csv, row 3, column reservation_effective_cost: is missing, "
        "but DiscountedUsage lines need it" in result["error"]
    )


@pytest.mark.parametrize(
    ("name", "damage", "message"),
    [
        (
            "bad-cost.csv",
            lambda rows: rows[1].update({"lineItem/UnblendedCost": "abc"}),
            "bad-cost.csv, row 3, column lineItem/UnblendedCost: 'abc' is not a number",
        ),
        (
            "nan-cost.csv",
            lambda rows: rows[0].update({"lineItem/UnblendedCost": "NaN"}),
            "nan-cost.csv, row 2, column lineItem/UnblendedCost: 'NaN' is not a number",
        ),
        (
            "bad-date.csv",
            lambda rows: rows[4].update({"lineItem/UsageStartDate": "yesterday"}),
            "bad-date.csv, row 6, column lineItem/UsageStartDate: 'yesterday' is not",
        ),
        (
            "no-currency.csv",
            lambda rows: rows[2].update({"lineItem/CurrencyCode": ""}),
            "no-currency.csv, row 4, column lineItem/CurrencyCode: is empty",
        ),
        (
            "bad-currency.csv",
            lambda rows: rows[5].update({"lineItem/CurrencyCode": "US$"}),
            "bad-currency.csv, row 7, column lineItem/CurrencyCode: 'US$' is not an "
            "ISO 4217 currency code",
        ),
    ],
    ids=["bad-cost", "nan-cost", "bad-date", "no-currency", "bad-currency"],
)
def test_bad_input_fails_naming_file_row_and_column_and_keeps_what_was_there(
    tmp_path, name, damage, message
):
    run_import(LEGACY_CUR)
    before = set(CostRecord.objects.values_list("pk", flat=True))
    daily = set(DailyCost.objects.values_list("pk", flat=True))
    rows = read_csv(LEGACY_CUR)
    damage(rows)
    code, result = run_import(write_csv(tmp_path / name, rows))
    assert (code, result["status"]) == (1, "failed")
    assert message in result["error"]
    assert set(CostRecord.objects.values_list("pk", flat=True)) == before
    assert set(DailyCost.objects.values_list("pk", flat=True)) == daily


def test_a_file_that_is_not_a_cur_is_refused_by_name(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("Date,Amount\n2025-03-01,1.00\n", encoding="utf-8")
    code, result = run_import(path, format="aws-cur")
    assert code == 1
    assert result["error"] == (
        "other.csv: is not an AWS Cost and Usage Report: missing column "
        "lineItem/UnblendedCost (legacy CUR) or line_item_unblended_cost (CUR 2.0)"
    )


def test_a_damaged_parquet_file_is_refused_by_name(tmp_path):
    path = write_parquet(tmp_path / "cur2.parquet", cur2_rows())
    path.write_bytes(path.read_bytes()[:200])
    code, result = run_import(path, format="aws-cur")
    assert code == 1
    assert result["error"].startswith("cur2.parquet: is not a readable Parquet file")
