"""FOCUS 1.0 to 1.3 cost and usage exports, from any provider: CSV, gzip or Parquet.

Columns that FOCUS added or renamed across versions are all accepted: 1.3's
ServiceProviderName stands in for ProviderName. Unknown and `x_` columns are ignored.
Only the columns needed to place a cost in time are required; the rest of a partial
export (such as the specification's own worked examples) fall back as documented below.

- BillingCurrency is mandatory in FOCUS: a file without the column is refused, unless
  the importer is given the currency its costs are in (`--currency`), which every row
  then takes. A file with the column keeps its own codes, each checked against ISO 4217.
- "(null)", like NULL and N/A, is a cell with no value: empty where the column may be
  empty, refused, by row and column, where a value is required (the costs, dates,
  ChargeCategory, BillingCurrency).
- List and contracted cost count a commitment once. FOCUS (ListCost and ContractedCost,
  1.0 to 1.3): "when aggregating ... exclude either one-time or recurring charges
  (ChargeCategory "Purchase") that are paid to cover future eligible charges or the
  covered charges themselves"; on an accrual basis, the purchases and their related
  Tax charges, because the Usage and Tax rows of the commitment's term already state
  the list and contracted cost. FOCUS marks such a purchase by an EffectiveCost of 0.
  So a Purchase or Tax row whose EffectiveCost is 0 is stored with a ListCost and
  ContractedCost of 0: summing either column then counts each commitment once, by the
  usage it covered (at list price, as the file states it) and by its unused part,
  which FOCUS reports as Usage rows with CommitmentDiscountStatus "Unused". The
  purchase keeps its BilledCost (the cash paid), its category and description. The
  specification's own example (100% utilisation without flexibility) sums to 6.00 of
  ListCost where 3.00 is true; it loads as 3.00.
"""

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from operator import getitem, itemgetter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from billing.importers.base import (
    NO_AMOUNT,
    NULLS,
    ColumnBatch,
    CsvFile,
    ImportFailure,
    NotColumnar,
    RowParser,
    missing,
)
from billing.importers.parquet import ParquetExport, is_parquet
from billing.memo import Memo
from core.currencies import ISO_4217_CODES, ZERO

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

    def __init__(self, *, currency: str | None = None) -> None:
        # The currency of a file without a BillingCurrency column (checked by the
        # caller, importer_for); a file with the column keeps its own.
        self.currency = currency

    @staticmethod
    def accepts(header: list[str]) -> bool:
        columns = set(header)
        return {"BilledCost", "ChargePeriodStart", "ChargeCategory"} <= columns

    def rows(self, path: Path) -> Iterator[dict]:
        source = ParquetExport(path) if is_parquet(path) else CsvFile(path)
        parse = RowParser(path.name)
        header = _checked_header(source.header(), path, self.currency)
        line = FocusLine(header, parse, self.currency)
        for row_number, values in source.lines():
            parse.row = row_number
            yield line.row(values)

    def column_batches(self, path: Path) -> Iterator[ColumnBatch]:
        """The rows of a FOCUS CSV file, plain or gzip, block by block: the same
        values as `rows()`, each distinct value read once per block by the same
        readers, and amounts checked and kept as their exact text. Raises
        NotColumnar where it cannot be sure to read what `rows()` reads."""
        if is_parquet(path):
            raise NotColumnar("Parquet files are read row by row")
        source = CsvFile(path)
        try:
            header = _checked_header(source.header(), path, self.currency)
            block = FocusBlock(header, path.name, self.currency)
            for raw in source.blocks():
                yield block.read(raw)
        except ImportFailure as failure:
            raise NotColumnar(str(failure)) from failure


def _checked_header(header: list[str], path: Path, currency: str | None) -> list[str]:
    if not header:
        raise ImportFailure("the file is empty", file=path.name)
    absent = [column for column in REQUIRED if column not in header]
    if absent:
        raise ImportFailure(
            f"is not a FOCUS export: missing column {', '.join(absent)}",
            file=path.name,
        )
    if CURRENCY_COLUMN not in header and currency is None:
        raise ImportFailure(
            f"has no {CURRENCY_COLUMN} column, which FOCUS requires: give the "
            "currency its costs are in to import it",
            file=path.name,
        )
    return header


class FocusLine:
    """Reads the lines of one FOCUS export into rows. Columns are found by position
    once, and each text, date and tags column reads each distinct value once: exports
    repeat the same accounts, services, hours and tags on line after line. Rows share
    those values, their tags dict included (rows are read-only to the loader)."""

    def __init__(
        self, header: list[str], parse: RowParser, currency: str | None
    ) -> None:
        self.parse = parse
        found = {column: index for index, column in enumerate(header)}
        # A column the file lacks reads as the empty cell `row()` adds to each line.
        past_the_end = len(header)

        def position(column: str | None) -> int:
            return found.get(column, past_the_end) if column else past_the_end

        readers = _readers(parse, set(found), currency)
        self.repeated_fields = list(readers)
        self.repeated_cells = itemgetter(*(position(c) for c, _ in readers.values()))
        self.memos = [Memo(read) for _, read in readers.values()]
        self.billed, self.effective, self.listed, self.contracted, self.quantity = map(
            position, AMOUNT_COLUMNS.values()
        )

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
        effective = required(values[self.effective], "EffectiveCost")
        listed = amount(values[self.listed], "ListCost")
        contracted = amount(values[self.contracted], "ContractedCost")
        row["billed_cost"] = billed
        row["effective_cost"] = effective
        if row["charge_category"] in PREPAYING and effective == ZERO:
            listed = contracted = ZERO  # the rows it paid for state them
        # Without list prices, ContractedCost defaults to ListCost (FOCUS); without
        # either, the billed amount is the best statement of price.
        if listed is None:
            listed = billed if contracted is None else contracted
        row["list_cost"] = listed
        row["contracted_cost"] = listed if contracted is None else contracted
        row["consumed_quantity"] = amount(values[self.quantity], "ConsumedQuantity")
        return row


def _readers(
    parse: RowParser, columns: set[str], currency: str | None
) -> dict[str, tuple[str | None, Callable[[str], object]]]:
    """For each field whose values repeat: the column it comes from (None if the file
    has none of its names), and how one raw value of it is read."""
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
    if CURRENCY_COLUMN in columns:
        readers["billing_currency"] = CURRENCY_COLUMN, partial(_currency, parse)
    else:
        readers["billing_currency"] = None, lambda _: currency
    for field, column in TIME_COLUMNS.items():
        readers[field] = column, partial(parse.timestamp_value, column=column)
    readers["tags"] = "Tags", partial(parse.tags_value, column="Tags")
    return readers


class FocusBlock:
    """Reads blocks of a FOCUS export's lines (Arrow record batches of text) into
    ColumnBatches: what FocusLine does line by line, a column at a time. The values
    that repeat go through the same readers, once per distinct value; the amounts,
    nearly all distinct, are checked by a pattern in C++ and kept as text, so that
    anything the pattern does not vouch for is left to the row path."""

    def __init__(self, header: list[str], file: str, currency: str | None) -> None:
        readers = _readers(RowParser(file), set(header), currency)
        # A column the file lacks (None, or a name not in it) reads as empty cells.
        self.columns = {
            field: column if column in header else None
            for field, (column, _) in readers.items()
        }
        self.memos = {field: Memo(read) for field, (_, read) in readers.items()}
        self.amount_columns = {
            field: column if column in header else None
            for field, column in AMOUNT_COLUMNS.items()
        }

    def read(self, raw: pa.RecordBatch) -> ColumnBatch:
        size, values, indices = raw.num_rows, {}, {}
        encoded: dict[str, pa.DictionaryArray] = {}
        for field, column in self.columns.items():
            memo = self.memos[field]
            if column is None:  # the file lacks it: every row reads an empty cell
                values[field] = [memo[""]]
                indices[field] = pa.repeat(pa.scalar(0, pa.int32()), size)
                continue
            if column not in encoded:
                encoded[column] = pc.dictionary_encode(raw.column(column))
                # Arrow's reader drops the \n of a quoted \r\n that straddles two
                # of its reads, leaving a bare \r: only the row path reads those.
                bare_return = pc.match_substring_regex(
                    encoded[column].dictionary, BARE_RETURN
                )
                if pc.any(bare_return).as_py():
                    raise NotColumnar(
                        f"a carriage return without a line feed in {column}"
                    )
            distinct = encoded[column].dictionary.to_pylist()
            values[field] = list(map(memo.__getitem__, distinct))
            indices[field] = encoded[column].indices
        starts, ends = (
            pc.take(pa.array(map(_microseconds, values[f]), pa.int64()), indices[f])
            for f in ("charge_period_start", "charge_period_end")
        )
        if pc.any(pc.less(ends, starts)).as_py():
            raise NotColumnar("a charge ends before it starts")
        amounts = {
            field: _exact_amounts(raw.column(column) if column else None, field, size)
            for field, column in self.amount_columns.items()
        }
        for required in ("billed_cost", "effective_cost"):
            if amounts[required].null_count:
                raise NotColumnar(f"an empty {required}")
        # As FocusLine.row: nothing of a prepaid purchase's list and contracted
        # cost, ContractedCost defaults to ListCost, and both, when absent, to the
        # billed amount.
        prepaid = _prepaid(values["charge_category"], indices["charge_category"])
        prepaid = pc.and_(
            prepaid, pc.match_substring_regex(amounts["effective_cost"], ZERO_AMOUNT)
        )
        for field in ("list_cost", "contracted_cost"):
            amounts[field] = pc.if_else(prepaid, "0", amounts[field])
        listed = pc.coalesce(
            amounts["list_cost"], amounts["contracted_cost"], amounts["billed_cost"]
        )
        amounts["contracted_cost"] = pc.coalesce(amounts["contracted_cost"], listed)
        amounts["list_cost"] = listed
        return ColumnBatch(size, values, indices, amounts)


def _prepaid(categories: list, indices: pa.Array) -> pa.Array:
    """For each row, whether its ChargeCategory is one that pays for other rows."""
    return pc.take(pa.array([c in PREPAYING for c in categories], pa.bool_()), indices)


BARE_RETURN = r"\r([^\n]|$)"
ZERO_AMOUNT = r"^-?0+(\.0+)?$"  # among the plain amounts AMOUNT_PATTERNS vouch for
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _microseconds(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


# An amount the row path reads as exactly this text and stores unrounded: no
# exponent, sign or spaces to interpret, and no more places than the column keeps.
AMOUNT_PATTERNS = {
    field: rf"^-?\d{{1,17}}(\.\d{{1,{places}}})?$"
    for field, places in (
        ("billed_cost", 11),
        ("effective_cost", 11),
        ("list_cost", 11),
        ("contracted_cost", 11),
        ("consumed_quantity", 15),
    )
}
EMPTY_AMOUNTS = pa.array(["", *NULLS])


def _exact_amounts(text: pa.Array | None, field: str, size: int) -> pa.Array:
    """The column's amounts as text, null where the row path reads none."""
    if text is None:
        return pa.nulls(size, pa.string())
    text = pc.if_else(pc.is_in(text, EMPTY_AMOUNTS), NO_AMOUNT, text)
    plain = pc.match_substring_regex(text, AMOUNT_PATTERNS[field])
    if not pc.all(plain, min_count=0).as_py():  # nulls are skipped
        raise NotColumnar(f"an amount of {field} the row path must read")
    return text


AMOUNT_COLUMNS = {
    "billed_cost": "BilledCost",
    "effective_cost": "EffectiveCost",
    "list_cost": "ListCost",
    "contracted_cost": "ContractedCost",
    "consumed_quantity": "ConsumedQuantity",
}
TIME_COLUMNS = {
    "charge_period_start": "ChargePeriodStart",
    "charge_period_end": "ChargePeriodEnd",
    "billing_period_start": "BillingPeriodStart",
    "billing_period_end": "BillingPeriodEnd",
}
CURRENCY_COLUMN = "BillingCurrency"
# Charge categories whose rows, with an EffectiveCost of 0, paid for charges that
# other rows state (see the module's docstring).
PREPAYING = frozenset({"Purchase", "Tax"})
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
        raise parse.fail("ChargeCategory", missing(raw, "a category"))
    return category


def _currency(parse: RowParser, raw: str) -> str:
    currency = parse.text_value(raw, CURRENCY_COLUMN, "billing_currency").upper()
    if not currency:
        raise parse.fail(CURRENCY_COLUMN, missing(raw, "a currency"))
    if currency not in ISO_4217_CODES:
        raise parse.fail(
            CURRENCY_COLUMN, f"{currency!r} is not an ISO 4217 currency code"
        )
    return currency
