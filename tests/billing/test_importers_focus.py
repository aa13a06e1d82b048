"""FOCUS exports through `billing_import`: the mandatory currency, the "(null)"
placeholder, and commitments counted once in list and contracted cost."""

from decimal import Decimal
from functools import partial

import pytest
from django.db.models import Sum

from billing.importers import importer_for
from billing.importers.base import ImportFailure
from billing.models import CostRecord, DailyCost
from tests.billing import importing
from tests.billing.importing import read_csv, total, write_csv
from tests.data import AWS_CUR_LEGACY, FOCUS_REAL, SAMPLES

pytestmark = pytest.mark.django_db(transaction=True)

EXAMPLES = SAMPLES / "focus-spec-v1.2-examples"
# The FOCUS 1.2 appendix's commitment discount without flexibility, fully used: a
# recurring purchase (ListCost 3.00) and the usage it covers (ListCost 3.00).
FULLY_USED = EXAMPLES / (
    "commitment_discount_flexibility__"
    "one_hundred_percent_utilization_without_commitment_discount_flexibility.csv"
)
UNUSED = EXAMPLES / (
    "commitment_discount_flexibility__"
    "zero_percent_utilization_without_commitment_discount_flexibility.csv"
)
# A prepaid SaaS spend agreement: 1,200 paid up front, drawn down by usage rows.
PREPAID = EXAMPLES / "saas_examples__spend_agreements__saas_spend_agreements_b1.csv"

run_import = partial(importing.run_import, source="focus")


def test_a_file_without_its_billing_currency_column_is_refused_naming_both():
    code, result = run_import(FULLY_USED)
    assert (code, result["status"]) == (1, "failed")
    assert result["error"] == (
        f"{FULLY_USED.name}: has no BillingCurrency column, which FOCUS requires: give "
        "the currency its costs are in to import it"
    )
    assert not CostRecord.objects.exists()


def test_with_a_currency_given_every_row_of_such_a_file_takes_it():
    code, result = run_import(FULLY_USED, currency="EUR")
    assert code == 0, result["error"]
    assert result["billed"] == {"EUR": "1.50"}
    assert set(CostRecord.objects.values_list("billing_currency", flat=True)) == {"EUR"}


def test_a_file_with_the_column_keeps_its_own_currencies():
    code, result = run_import(FOCUS_REAL, currency="EUR")
    assert code == 0, result["error"]
    assert set(result["billed"]) == {"USD"}


def test_a_currency_that_is_not_an_iso_4217_code_is_refused():
    with pytest.raises(ImportFailure) as refused:
        importer_for(FULLY_USED, currency="dollars")
    assert str(refused.value) == (
        f"{FULLY_USED.name}: the currency given, 'dollars', is not an ISO 4217 "
        "currency code"
    )


def test_a_currency_given_for_a_format_that_names_its_own_is_refused():
    with pytest.raises(ImportFailure) as refused:
        importer_for(AWS_CUR_LEGACY, currency="USD")
    assert "is a aws-cur export, which names the currency of every row" in str(
        refused.value
    )


def test_a_null_placeholder_is_an_empty_cell_where_the_column_may_be_empty(
    tmp_path,
):
    rows = read_csv(FOCUS_REAL)[:20]
    for row in rows:
        row.update(ResourceId="(null)", ChargeClass="(null)", Tags="(null)")
        row.update(ListCost="(null)", ContractedCost="(null)")
    code, result = run_import(write_csv(tmp_path / "nulls.csv", rows))
    assert code == 0, result["error"]
    records = CostRecord.objects.all()
    assert {(r.resource_id, r.charge_class, str(r.tags)) for r in records} == {
        ("", "", "{}")
    }
    # Without list prices, ListCost and ContractedCost fall back to BilledCost.
    assert total(records, "list_cost") == total(records, "billed_cost")


@pytest.mark.parametrize(
    ("column", "what"),
    [
        ("BilledCost", "a cost"),
        ("EffectiveCost", "a cost"),
        ("BillingCurrency", "a currency"),
        ("ChargeCategory", "a category"),
        ("ChargePeriodStart", "a date"),
    ],
)
def test_a_null_placeholder_in_a_mandatory_column_is_refused_by_row_and_column(
    tmp_path, column, what
):
    rows = read_csv(FOCUS_REAL)[:5]
    rows[2][column] = "(null)"
    code, result = run_import(write_csv(tmp_path / "nulls.csv", rows))
    assert (code, result["status"]) == (1, "failed")
    assert result["error"] == (
        f"nulls.csv, row 4, column {column}: is '(null)', which means no value, "
        f"but {what} is required"
    )


def test_a_fully_used_commitment_counts_once_in_list_and_contracted_cost():
    """The specification's example sums to 6.00 of ListCost; its truth is 3.00."""
    listed = sum(Decimal(row["ListCost"]) for row in read_csv(FULLY_USED))
    assert listed == Decimal("6.00")
    code, result = run_import(FULLY_USED, currency="USD")
    assert code == 0, result["error"]
    records = CostRecord.objects.all()
    assert total(records, "list_cost") == Decimal("3.00")
    assert total(records, "contracted_cost") == Decimal("3.00")
    # What budgets on those measures read: the daily rollup.
    rollup = DailyCost.objects.aggregate(Sum("list_cost"), Sum("contracted_cost"))
    assert rollup == {
        "list_cost__sum": Decimal("3.00"),
        "contracted_cost__sum": Decimal("3.00"),
    }
    # The purchase keeps the cash it cost and what it is.
    purchase = records.get(charge_category="Purchase")
    assert (purchase.billed_cost, purchase.effective_cost) == (Decimal("1.50"), 0)
    assert purchase.list_cost == purchase.contracted_cost == 0
    assert result["billed"] == {"USD": "1.50"}


def test_an_unused_commitment_counts_once_by_its_unused_row():
    code, result = run_import(UNUSED, currency="USD")
    assert code == 0, result["error"]
    # The unused commitment (3.00) and an on-demand VM (2.00); before, 8.00.
    assert total(CostRecord.objects, "list_cost") == Decimal("5.00")


def test_a_prepaid_spend_agreement_counts_once_by_the_usage_it_paid_for():
    rows = read_csv(PREPAID)
    code, result = run_import(PREPAID)
    assert code == 0, result["error"]
    drawn_down = sum(
        Decimal(row["ListCost"]) for row in rows if row["ChargeCategory"] == "Usage"
    )
    assert total(CostRecord.objects, "list_cost") == drawn_down == Decimal("1257")
    assert total(CostRecord.objects, "billed_cost") == Decimal("1200")


def test_tax_paid_with_a_prepaid_purchase_counts_once_too_but_other_rows_stay(
    tmp_path,
):
    base = read_csv(FOCUS_REAL)[0]
    changes = [
        # (ChargeCategory, BilledCost, EffectiveCost, ListCost): expected ListCost
        (("Purchase", "100", "0", "120"), Decimal(0)),
        (("Tax", "8", "0", "8"), Decimal(0)),
        (("Purchase", "50", "50", "60"), Decimal(60)),  # not prepaid: its own cost
        (("Tax", "4", "4", "4"), Decimal(4)),
        (("Usage", "0", "0", "7"), Decimal(7)),  # covered usage states list cost
    ]
    rows = []
    for number, ((category, billed, effective, listed), _) in enumerate(changes):
        rows.append(
            base
            | {
                "ChargeCategory": category,
                "BilledCost": billed,
                "EffectiveCost": effective,
                "ListCost": listed,
                "ContractedCost": listed,
                "ChargeDescription": f"line {number}",
            }
        )
    code, result = run_import(write_csv(tmp_path / "prepaid.csv", rows))
    assert code == 0, result["error"]
    stored = dict(CostRecord.objects.values_list("charge_description", "list_cost"))
    assert stored == {f"line {n}": expected for n, (_, expected) in enumerate(changes)}
    contracted = CostRecord.objects.values_list("contracted_cost", flat=True)
    assert sorted(contracted) == sorted(expected for _, expected in changes)
