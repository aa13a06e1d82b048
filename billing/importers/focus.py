"""FOCUS 1.0 to 1.3 cost and usage exports, from any provider: CSV, gzip or Parquet.

Columns that FOCUS added or renamed across versions are all accepted: 1.3's
ServiceProviderName stands in for ProviderName. Unknown and `x_` columns are ignored.
Only the columns needed to place a cost in time are required; the rest of a partial
export (such as the specification's own worked examples) fall back as documented below.
"""

from collections.abc import Iterator
from pathlib import Path

from django.conf import settings

from billing.importers.base import (
    CsvFile,
    ImportFailure,
    RowParser,
    first_present,
    new_row,
)
from billing.importers.parquet import ParquetExport, is_parquet
from spendtracker.currencies import ISO_4217_CODES

REQUIRED = (
    "BilledCost",
    "EffectiveCost",
    "ChargeCategory",
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "BillingPeriodStart",
    "BillingPeriodEnd",
)

TEXT_COLUMNS = {
    "billing_account_id": ("BillingAccountId",),
    "billing_account_name": ("BillingAccountName",),
    "sub_account_id": ("SubAccountId",),
    "sub_account_name": ("SubAccountName",),
    "charge_description": ("ChargeDescription",),
    "invoice_id": ("InvoiceId",),
    "provider_name": ("ServiceProviderName", "ProviderName", "InvoiceIssuerName"),
    "publisher_name": ("PublisherName", "HostProviderName"),
    "invoice_issuer_name": ("InvoiceIssuerName",),
    "service_name": ("ServiceName",),
    "service_category": ("ServiceCategory",),
    "region_id": ("RegionId",),
    "resource_id": ("ResourceId",),
    "resource_name": ("ResourceName",),
    "resource_type": ("ResourceType",),
    "sku_id": ("SkuId",),
    "consumed_unit": ("ConsumedUnit",),
}

# FOCUS spells these values one way; real exports do not ("Usage-based").
CANONICAL = {
    value.lower(): value
    for value in (
        "Usage",
        "Purchase",
        "Tax",
        "Credit",
        "Adjustment",
        "Correction",
        "One-Time",
        "Recurring",
        "Usage-Based",
    )
}


class FocusImporter:
    name = "focus"

    @staticmethod
    def accepts(header: list[str]) -> bool:
        columns = set(header)
        return {"BilledCost", "ChargePeriodStart", "ChargeCategory"} <= columns

    def rows(self, path: Path) -> Iterator[dict]:
        source = ParquetExport(path) if is_parquet(path) else CsvFile(path)
        header = source.header()
        if not header:
            raise ImportFailure("the file is empty", file=path.name)
        missing = [column for column in REQUIRED if column not in header]
        if missing:
            raise ImportFailure(
                f"is not a FOCUS export: missing column {', '.join(missing)}",
                file=path.name,
            )
        text_sources = {
            field: next((c for c in candidates if c in header), None)
            for field, candidates in TEXT_COLUMNS.items()
        }
        parse = RowParser(path.name)
        has_currency = "BillingCurrency" in header
        for row_number, record in source.records():
            parse.row = row_number
            row = new_row() | {
                field: parse.text(record, column, field)
                for field, column in text_sources.items()
                if column
            }
            billed = parse.required_decimal(record, "BilledCost")
            effective = parse.required_decimal(record, "EffectiveCost")
            listed = parse.decimal(record, "ListCost")
            contracted = parse.decimal(record, "ContractedCost")
            currency = (
                parse.text(record, "BillingCurrency", "billing_currency").upper()
                if has_currency
                else settings.REPORTING_CURRENCY
            )
            if currency not in ISO_4217_CODES:
                raise parse.fail(
                    "BillingCurrency", f"{currency!r} is not an ISO 4217 currency code"
                )
            row.update(
                billing_currency=currency,
                billed_cost=billed,
                effective_cost=effective,
                # Without list prices, ContractedCost defaults to ListCost (FOCUS);
                # without either, the billed amount is the best statement of price.
                list_cost=first_present(listed, contracted, billed),
                contracted_cost=first_present(contracted, listed, billed),
                consumed_quantity=parse.decimal(record, "ConsumedQuantity"),
                charge_category=_canonical(parse.text(record, "ChargeCategory", "")),
                charge_class=_canonical(parse.text(record, "ChargeClass", "")),
                charge_frequency=_canonical(parse.text(record, "ChargeFrequency", "")),
                charge_period_start=parse.timestamp(record, "ChargePeriodStart"),
                charge_period_end=parse.timestamp(record, "ChargePeriodEnd"),
                billing_period_start=parse.timestamp(record, "BillingPeriodStart"),
                billing_period_end=parse.timestamp(record, "BillingPeriodEnd"),
                tags=parse.tags(record, "Tags"),
            )
            if not row["charge_category"]:
                raise parse.fail("ChargeCategory", "is empty")
            if row["charge_period_end"] < row["charge_period_start"]:
                raise parse.fail("ChargePeriodEnd", "is before ChargePeriodStart")
            yield row


def _canonical(value: str) -> str:
    return CANONICAL.get(value.lower(), value)
