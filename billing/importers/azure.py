"""Azure Cost Management cost details (the native export, not FOCUS): EA and MCA
schemas, ActualCost and AmortizedCost datasets.

Header names are matched case-insensitively, so EA's `CostInBillingCurrency` and
MCA's `costInBillingCurrency` are the same column; the older EA variant's `Cost` and
`BillingCurrency` stand in for `CostInBillingCurrency` and `BillingCurrencyCode`.

Costs follow Microsoft's FOCUS conversion (finops-toolkit, docs-mslearn/focus/
convert.md), applied row by row to the one dataset in the file:

- A reservation or savings plan Purchase or Refund (PricingModel Reservation or
  SavingsPlan): BilledCost is the amount paid, EffectiveCost 0: its cost reaches
  effective spend only as it is amortised onto usage.
- Usage that a reservation or savings plan covered, and its unused remainder
  (ChargeType UnusedReservation, UnusedSavingsPlan): BilledCost 0, EffectiveCost is
  the row's cost: the cash was paid by the purchase.
- Every other row: BilledCost and EffectiveCost are both the row's cost.
- ListCost and ContractedCost of a commitment purchase or refund are 0, as FOCUS
  leaves out purchases that cover future charges from those measures: the usage it
  covers states them (at its on-demand and negotiated prices), so they count once.

So an ActualCost file bills exactly its cost column and an AmortizedCost file's
effective spend is exactly its cost column. Neither file alone holds both measures
of a commitment: ActualCost carries no amortisation (covered usage costs 0 there)
and AmortizedCost carries no purchases. (Microsoft's table gives unused commitment
rows their cost as BilledCost too; that cash is the purchase's, billed once, as the
FOCUS specification's worked examples show.)

A delivery (`rows_of_delivery`) may hold both datasets of a period, in one or more
files each. As Microsoft converts them, it is every row of the amortised dataset plus
the commitment purchases and refunds of the actual one: billed cost from the actual
dataset, effective cost from the amortised one, each cost once. The two datasets
have the same columns, so each file is told apart by its commitment rows:

- actual: commitment purchases or refunds, or covered usage at 0 cost;
- amortised: unused commitment rows, or covered usage with a cost;
- both (a file that already holds both): every row counts as it is;
- neither: a period without commitments, where both datasets are the same rows. Such
  a file takes the dataset its name says ("actual", "amortized" or "amortised"); in a
  delivery whose other files are told apart, one that is neither is refused, since
  counting it or leaving it out would each be a guess.

A delivery of one dataset alone imports in full, and `warnings` names the measure it
cannot give correctly: effective cost without the amortised dataset, billed cost
without the actual one.

Other fields:

- ChargeCategory: Usage, Purchase, Tax and Credit as written; UnusedReservation and
  UnusedSavingsPlan are Usage; Refund is a Purchase with ChargeClass "Correction";
  anything else (RoundingAdjustment) is an Adjustment.
- ChargeFrequency: OneTime, Recurring, UsageBased become One-Time, Recurring,
  Usage-Based.
- ListCost: PaygCostInBillingCurrency (MCA), else PayGPrice x Quantity. Purchases
  and refunds carry no pay-as-you-go price (Azure writes 0), so theirs is the
  contracted cost. ContractedCost: UnitPrice x Quantity. MCA prices are in the
  pricing currency, so both products are converted by ExchangeRatePricingToBilling
  when the file has it. Without prices, both fall back to the row's cost.
- Charge period: the row's Date as one UTC day, [Date, Date + 1 day). Billing
  period: BillingPeriodStartDate to BillingPeriodEndDate + 1 day (Azure's end date
  is inclusive, FOCUS's is exclusive).
- Billing account: the billing profile (an MCA billing profile is what is invoiced;
  on EA it is the enrollment, the same as BillingAccountId), else the billing
  account. Sub account: the subscription. Service: ServiceName, else
  MeterCategory. Region: ResourceLocation in lower case without spaces. Provider
  and, without a partner, invoice issuer: Microsoft.
- Tags: JSON, with or without the outer braces Azure leaves off.
"""

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from decimal import Context, Decimal
from pathlib import Path

from billing.importers.base import (
    CsvFile,
    ImportFailure,
    RowParser,
    first_present,
    new_row,
)
from billing.models import COST_DIGITS
from core.currencies import ISO_4217_CODES, ZERO

PROVIDER = "Microsoft"
ONE_DAY = timedelta(days=1)
# A computed price x quantity is kept to the precision CostRecord stores.
COST_PLACES = Decimal(1).scaleb(-COST_DIGITS["decimal_places"])
WIDE = Context(prec=60)

# Field -> the header names that carry it, preferred first.
COLUMNS = {
    "cost": ("CostInBillingCurrency", "Cost"),
    "currency": ("BillingCurrencyCode", "BillingCurrency"),
    "date": ("Date",),
    "billing_period_start": ("BillingPeriodStartDate",),
    "billing_period_end": ("BillingPeriodEndDate",),
    "charge_type": ("ChargeType",),
    "pricing_model": ("PricingModel",),
    "frequency": ("Frequency",),
    "quantity": ("Quantity",),
    "payg_cost": ("PaygCostInBillingCurrency",),
    "payg_price": ("PayGPrice",),
    "unit_price": ("UnitPrice",),
    "exchange_rate": ("ExchangeRatePricingToBilling",),
    "billing_profile_id": ("BillingProfileId",),
    "billing_profile_name": ("BillingProfileName",),
    "billing_account_id": ("BillingAccountId",),
    "billing_account_name": ("BillingAccountName",),
    "sub_account_id": ("SubscriptionId",),
    "sub_account_name": ("SubscriptionName",),
    "service_name": ("ServiceName",),
    "meter_category": ("MeterCategory",),
    "region": ("ResourceLocation", "Location"),
    "resource_id": ("ResourceId", "InstanceName"),
    "resource_name": ("ResourceName",),
    "charge_description": ("ProductName", "Product"),
    "invoice_id": ("InvoiceId",),
    "publisher_name": ("PublisherName",),
    "partner_name": ("PartnerName",),
    "sku_id": ("ProductId",),
    "unit": ("UnitOfMeasure",),
    "tags": ("Tags",),
}
REQUIRED = (
    "cost",
    "currency",
    "date",
    "billing_period_start",
    "billing_period_end",
    "charge_type",
)
# Columns that only Azure cost details have; FOCUS files are told apart by BilledCost.
MARKERS = frozenset({"date", "chargetype", "metercategory", "billingperiodstartdate"})
COST_NAMES = frozenset(name.lower() for name in COLUMNS["cost"])

COMMITMENTS = frozenset({"reservation", "savingsplan"})
PURCHASES = frozenset({"purchase", "refund"})
UNUSED_COMMITMENTS = frozenset({"unusedreservation", "unusedsavingsplan"})
CHARGE_CATEGORIES = {
    "usage": "Usage",
    "purchase": "Purchase",
    "tax": "Tax",
    "credit": "Credit",
    "unusedreservation": "Usage",
    "unusedsavingsplan": "Usage",
    "refund": "Purchase",
}
FREQUENCIES = {
    "onetime": "One-Time",
    "recurring": "Recurring",
    "usagebased": "Usage-Based",
}

# The dataset a file belongs to, as its rows (or else its name) tell.
ACTUAL, AMORTISED, BOTH, UNKNOWN = "actual", "amortised", "both", ""
NAMES = {
    ACTUAL: re.compile("actual", re.I),
    AMORTISED: re.compile("amorti[sz]ed", re.I),
}
ALONE = {
    ACTUAL: "the actual cost dataset without the amortised one: effective cost leaves "
    "out reserved-instance and savings plan usage (this dataset carries their "
    "purchases, and the usage they cover at 0); import the amortised cost dataset of "
    "the same period with it",
    AMORTISED: "the amortised cost dataset without the actual one: billed cost leaves "
    "out reservation and savings plan purchases (this dataset carries none); import "
    "the actual cost dataset of the same period with it",
}


class AzureCostDetailsImporter:
    name = "azure"

    def __init__(self) -> None:
        # What the last delivery read cannot give correctly, for the import's result.
        self.warnings: list[str] = []

    @staticmethod
    def accepts(header: list[str]) -> bool:
        names = {column.lower() for column in header}
        return (
            "billedcost" not in names
            and names >= MARKERS
            and not names.isdisjoint(COST_NAMES)
        )

    def rows(self, path: Path) -> Iterator[dict]:
        """Every row of one file, as it is."""
        for line in _lines(path):
            yield _cost_row(line)

    def rows_of_delivery(self, paths: list[Path]) -> Iterator[dict]:
        """The rows of a period's files, the actual and amortised datasets counted
        once between them (see the module's docstring). Sets `warnings`."""
        self.warnings = []
        if len(paths) == 1:
            # One file counts in full: what its rows show decides only the warning.
            seen = _Evidence()
            for line in _lines(paths[0]):
                seen.note(line)
                yield _cost_row(line)
            self.warnings = _warnings({paths[0]: seen.dataset() or _named(paths[0])})
            return
        datasets = _datasets(paths)
        self.warnings = _warnings(datasets)
        amortised = not {AMORTISED, BOTH}.isdisjoint(datasets.values())
        for path, dataset in datasets.items():
            purchases_only = amortised and dataset == ACTUAL
            for line in _lines(path):
                if not purchases_only or line.is_commitment_purchase():
                    yield _cost_row(line)


def _lines(path: Path) -> Iterator["_Line"]:
    source = CsvFile(path)
    columns = _Columns.find(source.header(), path.name)
    parse = RowParser(path.name)
    for row_number, record in source.records():
        parse.row = row_number
        yield _Line(parse, record, columns)


@dataclass
class _Evidence:
    """What a file's commitment rows say of the dataset it is."""

    purchases: bool = False  # commitment purchases: the actual dataset's alone
    amortised: bool = False  # unused commitment, or covered usage with a cost
    unpriced: bool = False  # covered usage at 0: the actual dataset's

    def note(self, line: "_Line") -> None:
        charge_type, pricing_model = line.charge_type(), line.pricing_model()
        covered = charge_type == "usage" and pricing_model in COMMITMENTS
        if pricing_model in COMMITMENTS and charge_type in PURCHASES:
            self.purchases = True
        elif charge_type in UNUSED_COMMITMENTS or (
            covered and line.required_decimal("cost")
        ):
            self.amortised = True
        elif covered:
            self.unpriced = True

    def dataset(self) -> str:
        if self.amortised:
            return BOTH if self.purchases else AMORTISED
        return ACTUAL if self.purchases or self.unpriced else UNKNOWN


def _evidence(path: Path) -> _Evidence:
    seen = _Evidence()
    for line in _lines(path):
        seen.note(line)
    return seen


def _named(path: Path) -> str:
    """The dataset a file's name says, when it says one."""
    said = [dataset for dataset, name in NAMES.items() if name.search(path.name)]
    return said[0] if len(said) == 1 else UNKNOWN


def _datasets(paths: list[Path]) -> dict[Path, str]:
    datasets = {path: _evidence(path).dataset() or _named(path) for path in paths}
    unknown = [path for path, dataset in datasets.items() if dataset == UNKNOWN]
    if unknown and len(unknown) < len(paths):
        raise ImportFailure(
            "has no reservation or savings plan rows, so they cannot tell whether "
            "it is of the actual or the amortised cost dataset, as the delivery's "
            'other files are: put "actual" or "amortized" in its name',
            file=unknown[0].name,
        )
    return datasets


def _warnings(datasets: dict[Path, str]) -> list[str]:
    """The measure a delivery of one dataset alone cannot give, naming its files."""
    present = set(datasets.values()) - {UNKNOWN}
    if len(present) != 1 or BOTH in present:
        return []
    (dataset,) = present
    files = ", ".join(path.name for path in datasets)
    return [f"{files}: {ALONE[dataset]}"]


@dataclass(frozen=True)
class _Columns:
    """Where each field sits in this file's header, as the header spells it."""

    names: dict[str, str]

    @classmethod
    def find(cls, header: list[str], file: str) -> "_Columns":
        if not header:
            raise ImportFailure("the file is empty", file=file)
        as_written = {name.lower(): name for name in header}
        names = {
            field: found
            for field, candidates in COLUMNS.items()
            if (found := _first_of(candidates, as_written))
        }
        missing = [COLUMNS[field][0] for field in REQUIRED if field not in names]
        if missing:
            raise ImportFailure(
                "is not an Azure cost details export: missing column "
                + ", ".join(missing),
                file=file,
            )
        return cls(names)


def _first_of(candidates: tuple[str, ...], as_written: dict[str, str]) -> str:
    present = (as_written.get(name.lower()) for name in candidates)
    return next(filter(None, present), "")


@dataclass
class _Line:
    """One record of the file, read field by field through its header."""

    parse: RowParser
    record: Mapping[str, str]
    columns: _Columns

    def column(self, field: str) -> str:
        return self.columns.names.get(field, "")

    def text(self, field: str, model_field: str = "") -> str:
        column = self.column(field)
        return self.parse.text(self.record, column, model_field) if column else ""

    def required_text(self, field: str) -> str:
        value = self.text(field)
        if not value:
            raise self.fail(field, "is empty")
        return value

    def decimal(self, field: str) -> Decimal | None:
        column = self.column(field)
        return self.parse.decimal(self.record, column) if column else None

    def required_decimal(self, field: str) -> Decimal:
        amount = self.decimal(field)
        if amount is None:
            raise self.fail(field, "is empty but a cost is required")
        return amount

    def fail(self, field: str, message: str) -> ImportFailure:
        return self.parse.fail(self.column(field), message)

    def charge_type(self) -> str:
        return _key(self.required_text("charge_type"))

    def pricing_model(self) -> str:
        return _key(self.text("pricing_model"))

    def is_commitment_purchase(self) -> bool:
        """A reservation or savings plan purchase or refund: in the actual dataset
        alone, and all of it that a delivery with the amortised dataset takes."""
        return self.pricing_model() in COMMITMENTS and self.charge_type() in PURCHASES


def _cost_row(line: _Line) -> dict:
    charge_type = line.charge_type()
    pricing_model = line.pricing_model()
    cost = line.required_decimal("cost")
    billed, effective = _billed_and_effective(charge_type, pricing_model, cost)
    listed: Decimal | None = ZERO
    contracted: Decimal | None = ZERO
    # A commitment's purchase has none: the usage it covers states them, once.
    if not line.is_commitment_purchase():
        listed, contracted = _list_and_contracted(line, charge_type)
    day = line.parse.timestamp(line.record, line.column("date"))
    usage = charge_type == "usage"
    return (
        new_row()
        | _descriptive_fields(line)
        | {
            "billing_currency": _currency(line),
            "billed_cost": billed,
            "effective_cost": effective,
            "list_cost": first_present(listed, contracted, cost),
            "contracted_cost": first_present(contracted, listed, cost),
            "charge_category": CHARGE_CATEGORIES.get(charge_type, "Adjustment"),
            "charge_class": "Correction" if charge_type == "refund" else "",
            "charge_frequency": _frequency(line),
            "charge_period_start": day,
            "charge_period_end": day + ONE_DAY,
            **_billing_period(line),
            "consumed_quantity": line.decimal("quantity") if usage else None,
            "consumed_unit": line.text("unit", "consumed_unit") if usage else "",
            "tags": line.parse.tags(line.record, line.column("tags")),
        }
    )


def _billed_and_effective(
    charge_type: str, pricing_model: str, cost: Decimal
) -> tuple[Decimal, Decimal]:
    if pricing_model in COMMITMENTS and charge_type in PURCHASES:
        return cost, ZERO
    if charge_type in UNUSED_COMMITMENTS or (
        charge_type == "usage" and pricing_model in COMMITMENTS
    ):
        return ZERO, cost
    return cost, cost


def _list_and_contracted(
    line: _Line, charge_type: str
) -> tuple[Decimal | None, Decimal | None]:
    quantity = line.decimal("quantity")
    rate = line.decimal("exchange_rate") or Decimal(1)
    contracted = _priced(line.decimal("unit_price"), quantity, rate)
    listed = line.decimal("payg_cost")
    if listed is None and charge_type not in PURCHASES:
        listed = _priced(line.decimal("payg_price"), quantity, rate)
    return listed, contracted


def _priced(
    price: Decimal | None, quantity: Decimal | None, rate: Decimal
) -> Decimal | None:
    if price is None or quantity is None:
        return None
    return WIDE.multiply(WIDE.multiply(price, quantity), rate).quantize(
        COST_PLACES, context=WIDE
    )


def _descriptive_fields(line: _Line) -> dict[str, str]:
    resource_id = line.text("resource_id", "resource_id")
    return {
        "billing_account_id": line.text("billing_profile_id", "billing_account_id")
        or line.text("billing_account_id", "billing_account_id"),
        "billing_account_name": line.text(
            "billing_profile_name", "billing_account_name"
        )
        or line.text("billing_account_name", "billing_account_name"),
        "sub_account_id": line.text("sub_account_id", "sub_account_id"),
        "sub_account_name": line.text("sub_account_name", "sub_account_name"),
        "charge_description": line.text("charge_description", "charge_description"),
        "invoice_id": line.text("invoice_id", "invoice_id"),
        "provider_name": PROVIDER,
        "publisher_name": line.text("publisher_name", "publisher_name"),
        "invoice_issuer_name": line.text("partner_name", "invoice_issuer_name")
        or PROVIDER,
        "service_name": line.text("service_name", "service_name")
        or line.text("meter_category", "service_name"),
        "region_id": line.text("region", "region_id").replace(" ", "").lower(),
        "resource_id": resource_id,
        "resource_name": _resource_name(line, resource_id),
        "sku_id": line.text("sku_id", "sku_id"),
    }


def _resource_name(line: _Line, resource_id: str) -> str:
    if line.column("resource_name"):
        return line.text("resource_name", "resource_name")
    # MCA has no ResourceName column; the id's last segment is the resource's name.
    return resource_id.rstrip("/").rpartition("/")[2]


def _currency(line: _Line) -> str:
    currency = line.required_text("currency").upper()
    if currency not in ISO_4217_CODES:
        raise line.fail("currency", f"{currency[:40]!r} is not an ISO 4217 code")
    return currency


def _frequency(line: _Line) -> str:
    frequency = line.text("frequency", "charge_frequency")
    return FREQUENCIES.get(_key(frequency), frequency)


def _billing_period(line: _Line) -> dict:
    parse, record = line.parse, line.record
    start = parse.timestamp(record, line.column("billing_period_start"))
    last_day = parse.timestamp(record, line.column("billing_period_end"))
    if last_day < start:
        before = line.column("billing_period_start")
        raise line.fail("billing_period_end", f"is before {before}")
    return {"billing_period_start": start, "billing_period_end": last_day + ONE_DAY}


def _key(value: str) -> str:
    """Azure spells its codes loosely ("On Demand", "OnDemand"): compare them bare."""
    return value.replace(" ", "").lower()
