"""AWS Cost and Usage Reports: legacy CUR CSV, CUR 2.0 (Data Exports) CSV and Parquet.

The three shapes carry the same facts under two spellings, legacy
`lineItem/UnblendedCost` and CUR 2.0 `line_item_unblended_cost` (legacy CUR in Parquet
uses the snake case too). CSV may be plain or gzip. Parquet is read in record batches,
only the columns used here, so memory stays flat however large the export. `--format
auto` reads a CSV header, so a Parquet export needs `--format aws-cur`.

How a line becomes a normalised row (FOCUS semantics):

- BilledCost is the unblended cost: what the invoice charges for the line. Negotiated
  discounts (EDP, private rates, bundles) arrive as their own negative lines, so the
  `net_` columns are not read; adding them would count those discounts twice.
- EffectiveCost is the amortised cost by AWS's documented rule (the CUR query library's
  amortised cost, also used by the FinOps Foundation's converter to FOCUS):

  | line item type          | EffectiveCost                                          |
  |-------------------------|--------------------------------------------------------|
  | DiscountedUsage         | reservation effective cost (upfront + recurring share) |
  | SavingsPlanCoveredUsage | savings plan effective cost                            |
  | SavingsPlanNegation     | 0 (it only cancels the covered usage's on-demand cost) |
  | SavingsPlanUpfrontFee   | 0 (spread over the covered usage)                      |
  | SavingsPlanRecurringFee | total commitment to date - used commitment (unused)    |
  | RIFee                   | unused amortised upfront fee + unused recurring fee    |
  | Fee with a reservation  | 0 (an RI's upfront payment, spread over its usage)     |
  | anything else           | the unblended cost                                     |

  So a prepaid purchase costs nothing when bought (FOCUS: EffectiveCost is 0 on a
  purchase covering future charges), used commitment lands on the usage it covered, and
  unused commitment stays visible on the fee line. An empty amortisation value counts
  as 0, as in AWS's own query; a report with such lines but without the column at all
  (a Data Export of a column subset) is refused: its amortised cost is unknowable.
- ListCost is the public on-demand cost of usage lines (the unblended cost when AWS
  gives none). Fees, taxes, credits and refunds have no list price but what is billed.
  A SavingsPlanNegation or negotiated-discount line has a ListCost of 0: the covered
  usage line already states the list price.
- ContractedCost is the unblended cost (the account's rate, before commitments), except
  on DiscountedUsage, whose unblended cost is 0 and whose contracted price is the list
  price, and on SavingsPlanNegation, which is 0 like its list cost.
- A commitment is counted once in list and contracted cost, as FOCUS says to
  aggregate them (ListCost, ContractedCost: exclude the purchases paid to cover future
  charges, whose covered usage already states its list and contracted cost). The
  usage a reservation or savings plan covered (DiscountedUsage,
  SavingsPlanCoveredUsage) states it; so the commitment's own lines (RIFee,
  SavingsPlanRecurringFee, SavingsPlanUpfrontFee, a Fee with a reservation) carry
  only what no usage states, their unused commitment: ListCost and ContractedCost
  are their EffectiveCost (0 for upfront fees, spread over the usage). Their
  BilledCost stays what the invoice charges.
- ChargeCategory: Usage, DiscountedUsage, SavingsPlanCoveredUsage, SavingsPlanNegation
  and the `*Discount` types are Usage; Fee, RIFee and the Savings Plan fees are
  Purchase; Tax is Tax; Credit is Credit. A Refund is an Adjustment with ChargeClass
  "Correction": FOCUS files a refund under the category of what it refunds, which the
  CUR line does not say, and AWS refunds money already invoiced. A row charged before
  its billing period began is a Correction too. Line item types AWS adds later become
  Adjustment at their unblended cost rather than failing the import.
- ProviderName is "AWS"; PublisherName the line's legal entity (the seller of record, a
  third party for Marketplace); InvoiceIssuerName the invoicing entity, else the billing
  entity; ServiceName the product name (the product code when empty); BillingAccountId
  the payer account; SubAccountId the usage account.
- Charge and billing periods are the usage and billing period dates, UTC and half-open
  `[start, end)` as AWS writes them. Rows whose `bill/InvoiceId` is still empty are
  imported like any other; the loader decides what is provisional.
- Tags: legacy CUR has one column per activated tag, `resourceTags/user:team`; CUR 2.0
  has the map `resource_tags` with keys such as `user_team`. Keys are stored as Cost
  Explorer, the Billing console and AWS's own FOCUS export name them: user-defined tags
  without their `user:` (or `user_`) prefix, AWS-generated ones with theirs
  (`aws:createdBy`). CUR 2.0 rewrites keys in snake case, so one tag may be `CostCenter`
  from a legacy CUR and `cost_center` from CUR 2.0. An empty value is a tag the line
  does not carry and is left out.
"""

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from billing.importers.base import (
    CsvFile,
    ImportFailure,
    RowParser,
    missing,
    new_row,
)
from billing.importers.parquet import ParquetExport, is_parquet
from core.currencies import ISO_4217_CODES, ZERO

# Rows per Parquet record batch: large enough to be fast, small enough to stay flat.

# What this importer reads, by its legacy CUR name and its CUR 2.0 name.
COLUMNS: dict[str, tuple[str, str]] = {
    "invoice_id": ("bill/InvoiceId", "bill_invoice_id"),
    "invoicing_entity": ("bill/InvoicingEntity", "bill_invoicing_entity"),
    "billing_entity": ("bill/BillingEntity", "bill_billing_entity"),
    "bill_type": ("bill/BillType", "bill_bill_type"),
    "payer_account_id": ("bill/PayerAccountId", "bill_payer_account_id"),
    "payer_account_name": ("bill/PayerAccountName", "bill_payer_account_name"),
    "billing_period_start": (
        "bill/BillingPeriodStartDate",
        "bill_billing_period_start_date",
    ),
    "billing_period_end": ("bill/BillingPeriodEndDate", "bill_billing_period_end_date"),
    "usage_account_id": ("lineItem/UsageAccountId", "line_item_usage_account_id"),
    "usage_account_name": ("lineItem/UsageAccountName", "line_item_usage_account_name"),
    "line_item_type": ("lineItem/LineItemType", "line_item_line_item_type"),
    "usage_start": ("lineItem/UsageStartDate", "line_item_usage_start_date"),
    "usage_end": ("lineItem/UsageEndDate", "line_item_usage_end_date"),
    "product_code": ("lineItem/ProductCode", "line_item_product_code"),
    "resource_id": ("lineItem/ResourceId", "line_item_resource_id"),
    "usage_amount": ("lineItem/UsageAmount", "line_item_usage_amount"),
    "currency": ("lineItem/CurrencyCode", "line_item_currency_code"),
    "unblended_cost": ("lineItem/UnblendedCost", "line_item_unblended_cost"),
    "description": ("lineItem/LineItemDescription", "line_item_line_item_description"),
    "legal_entity": ("lineItem/LegalEntity", "line_item_legal_entity"),
    "product_name": ("product/ProductName", "product_product_name"),
    "region": ("product/regionCode", "product_region_code"),
    "sku": ("product/sku", "product_sku"),
    "pricing_unit": ("pricing/unit", "pricing_unit"),
    "public_on_demand_cost": (
        "pricing/publicOnDemandCost",
        "pricing_public_on_demand_cost",
    ),
    "reservation_arn": ("reservation/ReservationARN", "reservation_reservation_a_r_n"),
    "reservation_effective_cost": (
        "reservation/EffectiveCost",
        "reservation_effective_cost",
    ),
    "reservation_unused_upfront": (
        "reservation/UnusedAmortizedUpfrontFeeForBillingPeriod",
        "reservation_unused_amortized_upfront_fee_for_billing_period",
    ),
    "reservation_unused_recurring": (
        "reservation/UnusedRecurringFee",
        "reservation_unused_recurring_fee",
    ),
    "savings_plan_effective_cost": (
        "savingsPlan/SavingsPlanEffectiveCost",
        "savings_plan_savings_plan_effective_cost",
    ),
    "savings_plan_total_commitment": (
        "savingsPlan/TotalCommitmentToDate",
        "savings_plan_total_commitment_to_date",
    ),
    "savings_plan_used_commitment": (
        "savingsPlan/UsedCommitment",
        "savings_plan_used_commitment",
    ),
}
LEGACY, CUR2 = 0, 1
REQUIRED = (
    "line_item_type",
    "unblended_cost",
    "currency",
    "usage_start",
    "usage_end",
    "billing_period_start",
    "billing_period_end",
)
# Older legacy reports name the region only by this column.
LEGACY_REGION = "product/region"
# CUR 2.0 keeps product attributes outside its fixed schema in this map.
PRODUCT_MAP = "product"
TAG_MAP = "resource_tags"
# Legacy one-column-per-tag layouts: `resourceTags/user:team` in CSV,
# `resource_tags_user_team` in legacy Parquet.
TAG_COLUMN_PREFIXES = ("resourceTags/", "resource_tags_")

USAGE_LINES = frozenset({"Usage", "DiscountedUsage", "SavingsPlanCoveredUsage"})
CATEGORIES = {
    **dict.fromkeys(USAGE_LINES | {"SavingsPlanNegation"}, "Usage"),
    **dict.fromkeys(
        ("Fee", "RIFee", "SavingsPlanUpfrontFee", "SavingsPlanRecurringFee"), "Purchase"
    ),
    "Tax": "Tax",
    "Credit": "Credit",
    "Refund": "Adjustment",
}
FREQUENCIES = {
    **dict.fromkeys(USAGE_LINES | {"SavingsPlanNegation"}, "Usage-Based"),
    **dict.fromkeys(("RIFee", "SavingsPlanRecurringFee"), "Recurring"),
    **dict.fromkeys(
        ("Fee", "SavingsPlanUpfrontFee", "Tax", "Credit", "Refund"), "One-Time"
    ),
}
# A commitment's own fee lines (with a Fee that names a reservation: its upfront fee).
COMMITMENT_FEES = frozenset(
    {"RIFee", "SavingsPlanRecurringFee", "SavingsPlanUpfrontFee"}
)
# The amortisation columns each line item type needs (see the table above).
AMORTISED_BY = {
    "DiscountedUsage": ("reservation_effective_cost",),
    "SavingsPlanCoveredUsage": ("savings_plan_effective_cost",),
    "SavingsPlanRecurringFee": (
        "savings_plan_total_commitment",
        "savings_plan_used_commitment",
    ),
    "RIFee": ("reservation_unused_upfront", "reservation_unused_recurring"),
}


class AwsCurImporter:
    name = "aws-cur"

    @staticmethod
    def accepts(header: list[str]) -> bool:
        return _spelling(header) is not None

    def rows(self, path: Path) -> Iterator[dict]:
        records: Iterator[tuple[int, dict[str, str]]]
        if is_parquet(path):
            parquet = ParquetExport(path)
            columns = _Columns.for_header(parquet.header(), path.name)
            records = parquet.records(columns.used())
        else:
            csv_file = CsvFile(path)
            columns = _Columns.for_header(csv_file.header(), path.name)
            records = csv_file.records()
        line = _CurLine(RowParser(path.name), columns)
        for row_number, record in records:
            line.parse.row = row_number
            yield line.row(record)


def tag_key(key: str) -> str:
    """The key as Cost Explorer shows it: `user:team` and `user_team` become `team`;
    AWS-generated keys (`aws:createdBy`) keep their prefix."""
    for prefix in ("user:", "user_"):
        if key.startswith(prefix) and len(key) > len(prefix):
            return key.removeprefix(prefix)
    return key


def _spelling(header: list[str]) -> int | None:
    present = set(header)
    for spelling in (LEGACY, CUR2):
        needed = {
            COLUMNS[fact][spelling]
            for fact in ("unblended_cost", "usage_start", "billing_period_start")
        }
        if needed <= present:
            return spelling
    return None


def _is_negotiated_discount(line_type: str) -> bool:
    """EdpDiscount, BundledDiscount, PrivateRateDiscount, SppDiscount, Discount, ..."""
    return line_type.endswith("Discount")


def _category(line_type: str) -> str:
    if _is_negotiated_discount(line_type):
        return "Usage"
    return CATEGORIES.get(line_type, "Adjustment")


def _frequency(line_type: str) -> str:
    if _is_negotiated_discount(line_type):
        return "Usage-Based"
    return FREQUENCIES.get(line_type, "")


@dataclass
class _Columns:
    """Where each fact sits in one report's header."""

    spelling: int
    names: dict[str, str]
    tag_columns: dict[str, str] = field(default_factory=dict)
    tag_map: str = ""
    product_map: str = ""

    @classmethod
    def for_header(cls, header: list[str], file: str) -> "_Columns":
        if not header:
            raise ImportFailure("the file is empty", file=file)
        spelling = _spelling(header)
        if spelling is None:
            raise ImportFailure(
                "is not an AWS Cost and Usage Report: missing column "
                "lineItem/UnblendedCost (legacy CUR) or line_item_unblended_cost "
                "(CUR 2.0)",
                file=file,
            )
        present = set(header)
        names = {
            fact: spellings[spelling]
            for fact, spellings in COLUMNS.items()
            if spellings[spelling] in present
        }
        missing = [COLUMNS[fact][spelling] for fact in REQUIRED if fact not in names]
        if missing:
            raise ImportFailure(
                "is not an AWS Cost and Usage Report: missing column "
                + ", ".join(missing),
                file=file,
            )
        if "region" not in names and LEGACY_REGION in present:
            names["region"] = LEGACY_REGION
        return cls(
            spelling=spelling,
            names=names,
            tag_columns=_tag_columns(header),
            tag_map=TAG_MAP if TAG_MAP in present else "",
            product_map=(
                PRODUCT_MAP
                if "product_name" not in names and PRODUCT_MAP in present
                else ""
            ),
        )

    def used(self) -> list[str]:
        """Every column read, so that a Parquet reader skips the rest."""
        maps = [column for column in (self.tag_map, self.product_map) if column]
        return [*self.names.values(), *self.tag_columns, *maps]

    def name_of(self, fact: str) -> str:
        return COLUMNS[fact][self.spelling]


def _tag_columns(header: list[str]) -> dict[str, str]:
    """{column: tag key} for the legacy one-column-per-tag layouts."""
    columns = {}
    for column in header:
        for prefix in TAG_COLUMN_PREFIXES:
            if column.startswith(prefix) and len(column) > len(prefix):
                columns[column] = tag_key(column.removeprefix(prefix))
    return columns


class _CurLine:
    """Turns one CUR line, as {column: text}, into a normalised row."""

    def __init__(self, parse: RowParser, columns: _Columns) -> None:
        self.parse = parse
        self.columns = columns
        self.names = columns.names

    def row(self, record: Mapping[str, str]) -> dict:
        line_type = self._text(record, "line_item_type", "")
        if not line_type:
            raise self.parse.fail(self.names["line_item_type"], "is empty")
        billed = self._cost(record, "unblended_cost")
        effective = self._effective_cost(record, line_type, billed)
        listed = self._list_cost(record, line_type, billed)
        contracted = _contracted_cost(line_type, billed, listed)
        if self._is_commitment_fee(record, line_type):
            listed = contracted = effective  # the unused part: no usage states it
        row = new_row() | self._descriptions(record)
        row.update(
            billing_currency=self._currency(record),
            charge_category=_category(line_type),
            charge_frequency=_frequency(line_type),
            billed_cost=billed,
            effective_cost=effective,
            list_cost=listed,
            contracted_cost=contracted,
            charge_period_start=self._timestamp(record, "usage_start"),
            charge_period_end=self._timestamp(record, "usage_end"),
            billing_period_start=self._timestamp(record, "billing_period_start"),
            billing_period_end=self._timestamp(record, "billing_period_end"),
            tags=self._tags(record),
        )
        if line_type in USAGE_LINES:
            row["consumed_quantity"] = self._amount(record, "usage_amount")
            row["consumed_unit"] = self._text(record, "pricing_unit", "consumed_unit")
        # A refund returns money already invoiced; a charge from before the billing
        # period corrects an earlier one.
        if line_type == "Refund" or (
            row["charge_period_start"] < row["billing_period_start"]
        ):
            row["charge_class"] = "Correction"
        if row["charge_period_end"] < row["charge_period_start"]:
            raise self.parse.fail(self.names["usage_end"], "is before the usage start")
        return row

    def _descriptions(self, record: Mapping[str, str]) -> dict:
        text = self._text
        return {
            "billing_account_id": text(
                record, "payer_account_id", "billing_account_id"
            ),
            "billing_account_name": text(
                record, "payer_account_name", "billing_account_name"
            ),
            "sub_account_id": text(record, "usage_account_id", "sub_account_id"),
            "sub_account_name": text(record, "usage_account_name", "sub_account_name"),
            "invoice_id": text(record, "invoice_id", "invoice_id"),
            "charge_description": text(record, "description", "charge_description"),
            "provider_name": "AWS",
            "publisher_name": text(record, "legal_entity", "publisher_name"),
            "invoice_issuer_name": (
                text(record, "invoicing_entity", "invoice_issuer_name")
                or text(record, "billing_entity", "invoice_issuer_name")
            ),
            "service_name": (
                self._product_name(record)
                or text(record, "product_code", "service_name")
            ),
            "region_id": text(record, "region", "region_id"),
            "resource_id": text(record, "resource_id", "resource_id"),
            "sku_id": text(record, "sku", "sku_id"),
        }

    def _effective_cost(
        self, record: Mapping[str, str], line_type: str, billed: Decimal
    ) -> Decimal:
        for fact in AMORTISED_BY.get(line_type, ()):
            if fact not in self.names:
                raise self.parse.fail(
                    self.columns.name_of(fact),
                    f"is missing, but {line_type} lines need it for the amortised cost",
                )
        amount = self._amount_or_zero
        match line_type:
            case "DiscountedUsage":
                return amount(record, "reservation_effective_cost")
            case "SavingsPlanCoveredUsage":
                return amount(record, "savings_plan_effective_cost")
            case "SavingsPlanNegation" | "SavingsPlanUpfrontFee":
                return ZERO
            case "SavingsPlanRecurringFee":
                return amount(record, "savings_plan_total_commitment") - amount(
                    record, "savings_plan_used_commitment"
                )
            case "RIFee":
                return amount(record, "reservation_unused_upfront") + amount(
                    record, "reservation_unused_recurring"
                )
            case "Fee" if self._text(record, "reservation_arn", ""):
                return ZERO
        return billed

    def _is_commitment_fee(self, record: Mapping[str, str], line_type: str) -> bool:
        """A reservation's or savings plan's own fee, paid for the usage it covers."""
        return line_type in COMMITMENT_FEES or (
            line_type == "Fee" and bool(self._text(record, "reservation_arn", ""))
        )

    def _list_cost(
        self, record: Mapping[str, str], line_type: str, billed: Decimal
    ) -> Decimal:
        if line_type == "SavingsPlanNegation" or _is_negotiated_discount(line_type):
            return ZERO
        if line_type in USAGE_LINES:
            public = self._amount(record, "public_on_demand_cost")
            return billed if public is None else public
        return billed

    def _currency(self, record: Mapping[str, str]) -> str:
        raw = record.get(self.names["currency"])
        currency = self._text(record, "currency", "billing_currency").upper()
        if not currency:
            raise self.parse.fail(self.names["currency"], missing(raw, "a currency"))
        if currency not in ISO_4217_CODES:
            raise self.parse.fail(
                self.names["currency"],
                f"{currency[:40]!r} is not an ISO 4217 currency code",
            )
        return currency

    def _product_name(self, record: Mapping[str, str]) -> str:
        if self.columns.product_map:
            product = self.parse.tags(record, self.columns.product_map)
            return str(product.get("product_name") or "")
        return self._text(record, "product_name", "service_name")

    def _tags(self, record: Mapping[str, str]) -> dict:
        tags = {}
        if self.columns.tag_map:
            for key, value in self.parse.tags(record, self.columns.tag_map).items():
                if value not in (None, ""):
                    tags[tag_key(key)] = value
        for column, key in self.columns.tag_columns.items():
            value = (record.get(column) or "").strip()
            if value:
                tags[key] = value
        return tags

    def _text(self, record: Mapping[str, str], fact: str, field_name: str) -> str:
        column = self.names.get(fact)
        return self.parse.text(record, column, field_name) if column else ""

    def _amount(self, record: Mapping[str, str], fact: str) -> Decimal | None:
        column = self.names.get(fact)
        if not column:
            return None
        return self.parse.decimal(record, column)

    def _amount_or_zero(self, record: Mapping[str, str], fact: str) -> Decimal:
        amount = self._amount(record, fact)
        return ZERO if amount is None else amount

    def _cost(self, record: Mapping[str, str], fact: str) -> Decimal:
        amount = self._amount(record, fact)
        if amount is None:
            raise self.parse.fail(self.names[fact], "is empty but a cost is required")
        return amount

    def _timestamp(self, record: Mapping[str, str], fact: str) -> datetime:
        return self.parse.timestamp(record, self.names[fact])


def _contracted_cost(line_type: str, billed: Decimal, listed: Decimal) -> Decimal:
    if line_type == "DiscountedUsage":
        return listed
    if line_type == "SavingsPlanNegation":
        return ZERO
    return billed
