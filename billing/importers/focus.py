"""FOCUS 1.0 to 1.3 cost and usage exports, from any provider: CSV, gzip or Parquet.

Columns that FOCUS added or renamed across versions are all accepted: 1.3's
ServiceProviderName stands in for ProviderName. Unknown and `x_` columns are ignored.
Only the columns needed to place a cost in time are required; the rest of a partial
export (such as the specification's own worked examples) fall back as documented below.
"""

from collections.abc import Callable, Iterator
from functools import partial
from operator import getitem, itemgetter
from pathlib import Path

from django.conf import settings

from billing.importers.base import CsvFile, ImportFailure, RowParser
from billing.importers.parquet import ParquetExport, is_parquet
from billing.memo import Memo
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
        parse = RowParser(path.name)
        line = FocusLine(header, parse)
        for row_number, values in source.lines():
            parse.row = row_number
            yield line.row(values)


class FocusLine:
    """Reads the lines of one FOCUS export into rows. Columns are found by position
    once, and each text, date and tags column reads each distinct value once: exports
    repeat the same accounts, services, hours and tags on line after line. Rows share
    those values, their tags dict included (rows are read-only to the loader)."""

    def __init__(self, header: list[str], parse: RowParser) -> None:
        self.parse = parse
        found = {column: index for index, column in enumerate(header)}
        # A column the file lacks reads as the empty cell `row()` adds to each line.
        past_the_end = len(header)

        def position(column: str | None) -> int:
            return found.get(column, past_the_end) if column else past_the_end

        readers = self._readers(set(found))
        self.repeated_fields = list(readers)
        self.repeated_cells = itemgetter(*(position(c) for c, _ in readers.values()))
        self.memos = [Memo(read) for _, read in readers.values()]
        self.billed, self.effective, self.listed, self.contracted, self.quantity = (
            position(column)
            for column in (
                "BilledCost",
                "EffectiveCost",
                "ListCost",
                "ContractedCost",
                "ConsumedQuantity",
            )
        )

    def _readers(
        self, columns: set[str]
    ) -> dict[str, tuple[str | None, Callable[[str], object]]]:
        """For each field whose values repeat: the column it comes from (None if the
        file has none of its names), and how one raw value of it is read."""
        parse = self.parse
        readers: dict[str, tuple[str | None, Callable[[str], object]]] = {}
        for field, candidates in TEXT_COLUMNS.items():
            column = next((c for c in candidates if c in columns), None)
            readers[field] = (
                column,
                partial(parse.text_value, column=column or "", field=field),
            )
        for field, column in CANONICAL_COLUMNS.items():
            readers[field] = column, partial(_canonical_value, parse, column, field)
        readers["charge_category"] = "ChargeCategory", partial(_category, parse)
        if "BillingCurrency" in columns:
            readers["billing_currency"] = "BillingCurrency", partial(_currency, parse)
        else:
            readers["billing_currency"] = None, lambda _: settings.REPORTING_CURRENCY
        for field, column in TIME_COLUMNS.items():
            readers[field] = column, partial(parse.timestamp_value, column=column)
        readers["tags"] = "Tags", partial(parse.tags_value, column="Tags")
        return readers

    def row(self, values: list[str]) -> dict:
        values.append("")  # the cell of every column the file lacks
        row = dict(
            zip(
                self.repeated_fields,
                map(getitem, self.memos, self.repeated_cells(values)),
                strict=True,
            )
        )
        if row["charge_period_end"] < row["charge_period_start"]:
            raise self.parse.fail("ChargePeriodEnd", "is before ChargePeriodStart")
        amount, required = self.parse.amount, self.parse.required_amount
        billed = required(values[self.billed], "BilledCost")
        listed = amount(values[self.listed], "ListCost")
        contracted = amount(values[self.contracted], "ContractedCost")
        row["billed_cost"] = billed
        row["effective_cost"] = required(values[self.effective], "EffectiveCost")
        # Without list prices, ContractedCost defaults to ListCost (FOCUS); without
        # either, the billed amount is the best statement of price.
        if listed is None:
            listed = billed if contracted is None else contracted
        row["list_cost"] = listed
        row["contracted_cost"] = listed if contracted is None else contracted
        row["consumed_quantity"] = amount(values[self.quantity], "ConsumedQuantity")
        return row


TIME_COLUMNS = {
    "charge_period_start": "ChargePeriodStart",
    "charge_period_end": "ChargePeriodEnd",
    "billing_period_start": "BillingPeriodStart",
    "billing_period_end": "BillingPeriodEnd",
}
CANONICAL_COLUMNS = {
    "charge_class": "ChargeClass",
    "charge_frequency": "ChargeFrequency",
}


def _canonical_value(parse: RowParser, column: str, field: str, raw: str) -> str:
    value = parse.text_value(raw, column, field)
    return CANONICAL.get(value.lower(), value)


def _category(parse: RowParser, raw: str) -> str:
    category = _canonical_value(parse, "ChargeCategory", "charge_category", raw)
    if not category:
        raise parse.fail("ChargeCategory", "is empty")
    return category


def _currency(parse: RowParser, raw: str) -> str:
    currency = parse.text_value(raw, "BillingCurrency", "billing_currency").upper()
    if currency not in ISO_4217_CODES:
        raise parse.fail(
            "BillingCurrency", f"{currency!r} is not an ISO 4217 currency code"
        )
    return currency
