"""What every importer shares: opening files, parsing values, and naming bad input.

An importer turns one provider's export into a stream of normalised rows: dicts keyed by
CostRecord field names (`new_row()` lists them with their empty values), with Decimal
money, aware UTC datetimes and tags as a flat dict. The loader does everything else
(allocation, provisional flags, idempotency, the database).
"""

import csv
import gzip
import io
import json
import re
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import IO, Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
from django.conf import settings

from billing.models import BillingSource, CostRecord

# CostRecord keeps costs to 19 digits before the point and quantities to 17.
LARGEST_AMOUNT = Decimal(10) ** 17
# How exports write "no value"; "(null)" is the placeholder FOCUS data generators use.
NULLS = frozenset({"", "null", "NULL", "Null", "(null)", "None", "N/A"})
# Longest field the csv module accepts; anything longer is refused with its row number.
MAX_FIELD_CHARS = 1_000_000
csv.field_size_limit(MAX_FIELD_CHARS)
# A header is read whole before any row: these bound what that costs. The widest real
# export (an AWS CUR with hundreds of tag columns) is about 40,000 characters.
MAX_HEADER_CHARS = 1 << 20
MAX_COLUMNS = 5_000
# Arrow reads CSV in blocks of this size; its memory grows with it (about 40 MB a MB).
BLOCK_BYTES = 1 << 20
# A line is read whole before it is parsed: one of 200 MB (a gzip of 200 KB can hold
# it) would cost a worker several times that. Real lines are under 100,000 characters.
MAX_LINE_CHARS = 4 * MAX_FIELD_CHARS
# Python's JSON parser recurses once per level: thousands of levels raise
# RecursionError. This says so about a cell or a file, naming it.
TOO_DEEP = "is JSON nested thousands of levels deep, which no billing export is"


# Every key an importer's row carries; the loader adds source, run and allocation.
ROW_TEXT_FIELDS = (
    "billing_account_id",
    "billing_account_name",
    "sub_account_id",
    "sub_account_name",
    "charge_category",
    "charge_class",
    "charge_description",
    "charge_frequency",
    "billing_currency",
    "invoice_id",
    "provider_name",
    "publisher_name",
    "invoice_issuer_name",
    "service_name",
    "service_category",
    "region_id",
    "resource_id",
    "resource_name",
    "resource_type",
    "sku_id",
    "consumed_unit",
)
ROW_REQUIRED_FIELDS = (
    "billing_period_start",
    "billing_period_end",
    "charge_period_start",
    "charge_period_end",
    "billed_cost",
    "effective_cost",
    "list_cost",
    "contracted_cost",
)


def new_row() -> dict:
    """A row with every optional field empty; an importer fills in what it knows and
    must set every field of ROW_REQUIRED_FIELDS. Rows may share values, their tags
    dict included: nothing changes a row once it is yielded."""
    return {
        **dict.fromkeys(ROW_TEXT_FIELDS, ""),
        "consumed_quantity": None,
        "tags": {},
    }


class ImportFailure(Exception):
    """Bad input, named by file, row and column so a person can find and fix it."""

    http_status: int | None = None  # what a provider's API answered, if it did

    def __init__(
        self, message: str, *, file: str = "", row: int | None = None, column: str = ""
    ) -> None:
        self.message, self.file, self.row, self.column = message, file, row, column
        super().__init__(str(self))

    def __str__(self) -> str:
        where = [part for part in (self.file, self._row(), self._column()) if part]
        return f"{', '.join(where)}: {self.message}" if where else self.message

    def _row(self) -> str:
        return f"row {self.row}" if self.row is not None else ""

    def _column(self) -> str:
        return f"column {self.column}" if self.column else ""


class NotColumnar(Exception):
    """The columnar path cannot read this file exactly as the row path would (an
    amount written with an exponent, a cell the row path refuses, a line it reads
    differently...): the row path reads it instead, and decides."""


@dataclass
class ColumnBatch:
    """A block of normalised rows, column by column: what `rows()` yields, for an
    importer that reads many lines at once (the fast path of large FOCUS files).

    Each repeating field is its distinct values, as `rows()` gives them, and for each
    row the index of its value; each amount is its exact text as the database keeps
    it, or null."""

    size: int
    values: dict[str, list]
    indices: dict[str, pa.Array]
    amounts: dict[str, pa.Array]


NO_AMOUNT = pa.scalar(None, pa.string())  # a ColumnBatch amount that is not there


class Importer(Protocol):
    """One module per source kind provides this."""

    name: str

    @staticmethod
    def accepts(header: list[str]) -> bool: ...

    def rows(self, path: Path) -> Iterator[dict]: ...


@dataclass
class _Position:
    row: int = 0


@dataclass
class ExportFile:
    """An export's text, plain or gzip, UTF-8 with or without a byte-order mark."""

    path: Path

    def open(self) -> IO[str]:
        # Decoding happens lazily while rows are read, where an error can be named.
        return io.TextIOWrapper(self._binary(), encoding="utf-8-sig", newline="")

    def text_lines(self, text: IO[str]) -> Iterator[str]:
        """The lines of `text` (from `open()`), refused once one passes
        MAX_LINE_CHARS: a line is read whole, whatever its length."""
        number = 0
        while line := text.readline(MAX_LINE_CHARS + 1):
            number += 1
            if len(line) > MAX_LINE_CHARS:
                raise ImportFailure(
                    f"the line is over {MAX_LINE_CHARS:,} characters: this is not a "
                    "billing export, or the file is damaged",
                    file=self.path.name,
                    row=number,
                )
            yield line

    def _is_gzip(self) -> bool:
        with self.path.open("rb") as probe:
            return probe.read(2) == b"\x1f\x8b"

    def _binary(self) -> io.BufferedReader:
        """The file's bytes, decompressed if it is gzip (no more than
        IMPORT_MAX_DECOMPRESSED_MB of them); the caller closes it."""
        if not self._is_gzip():
            return self.path.open("rb")
        return io.BufferedReader(_Decompressed(gzip.open(self.path), self.path.name))

    def _first_undecodable_byte(self) -> tuple[int | None, int]:
        """Where decoding fails, by line: decoding runs ahead in blocks, so the row
        being parsed when it failed is not the row that holds the bad byte."""
        with self._binary() as raw:
            number = 0
            while line := raw.readline(4 * MAX_LINE_CHARS):  # UTF-8: 4 bytes a char
                number += 1
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as exc:
                    if exc.end < len(line):  # not a character cut by the limit
                        return number, exc.start + 1
        return None, 0

    @contextmanager
    def _named_errors(self) -> Iterator[_Position]:
        """Turn what a damaged file raises into an ImportFailure that names it."""
        name, position = self.path.name, _Position()
        try:
            yield position
        except UnicodeDecodeError as exc:
            line, column = self._first_undecodable_byte()
            raise ImportFailure(
                f"is not UTF-8 text (byte {column} of the line cannot be decoded: "
                "save the export as UTF-8)",
                file=name,
                row=line,
            ) from exc
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise ImportFailure(
                f"the compressed file is truncated or damaged ({exc})", file=name
            ) from exc
        except csv.Error as exc:
            raise ImportFailure(str(exc), file=name, row=position.row + 1) from exc


def max_decompressed_bytes() -> int:
    return settings.IMPORT_MAX_DECOMPRESSED_MB << 20


def too_large_decompressed(file: str) -> ImportFailure:
    return ImportFailure(
        f"decompresses to over {settings.IMPORT_MAX_DECOMPRESSED_MB:,} MB, the most "
        "an import reads of one file (IMPORT_MAX_DECOMPRESSED_MB): split the export, "
        "or ask an administrator to raise the limit",
        file=file,
    )


class _Decompressed(io.RawIOBase):
    """A decompressing stream that refuses to give more than max_decompressed_bytes:
    a few kilobytes of gzip can expand without end."""

    def __init__(self, stream: gzip.GzipFile, file: str) -> None:
        super().__init__()
        self._stream, self._file = stream, file
        self._left = max_decompressed_bytes()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = self._stream.readinto(buffer)
        self._left -= count
        if self._left < 0:
            raise too_large_decompressed(self._file)
        return count

    def close(self) -> None:
        self._stream.close()
        super().close()


class CsvFile(ExportFile):
    """A CSV export, plain or gzip, UTF-8 with or without a byte-order mark."""

    def header(self) -> list[str]:
        with self._named_errors(), self.open() as text:
            lines = _header_lines(text, self.path.name)
            return checked_header(
                [column.strip() for column in next(csv.reader(lines), [])],
                self.path.name,
            )

    def records(self) -> Iterator[tuple[int, dict[str, str]]]:
        """(row number as a spreadsheet shows it, {column: raw value}) for each row."""
        header = self.header()
        for number, values in self.lines():
            yield number, dict(zip(header, values, strict=True))

    def lines(self) -> Iterator[tuple[int, list[str]]]:
        """(row number as a spreadsheet shows it, raw values in header order) for each
        row: what `records()` gives, without a dict per row, for importers that look
        their columns up once by position."""
        width = len(self.header())  # bounded: the reader below reads it again
        with self._named_errors() as position, self.open() as text:
            reader = csv.reader(self.text_lines(text))
            next(reader, [])
            if not width:
                raise ImportFailure("the file is empty", file=self.path.name)
            for values in reader:
                position.row = reader.line_num
                if not any(values):
                    continue
                if len(values) != width:
                    raise ImportFailure(
                        f"has {len(values)} fields but the header has {width}",
                        file=self.path.name,
                        row=reader.line_num,
                    )
                yield reader.line_num, values

    def blocks(self) -> Iterator[pa.RecordBatch]:
        """The rows in blocks of about BLOCK_BYTES, every column as text, read by
        Arrow's CSV reader (in C++, many times faster than `lines()`). Raises
        NotColumnar for anything `lines()` might read differently or refuse: the
        caller then reads the file with `lines()`, which names the problem."""
        header = self.header()
        if not header or len(set(header)) != len(header):
            raise NotColumnar("the header is empty or names a column twice")
        left = max_decompressed_bytes() if self._is_gzip() else float("inf")
        try:
            reader = pcsv.open_csv(
                self._arrow_stream(),
                read_options=pcsv.ReadOptions(
                    column_names=header,
                    skip_rows=1,
                    block_size=BLOCK_BYTES,
                    use_threads=False,  # the database's COPY has the other core
                ),
                parse_options=pcsv.ParseOptions(newlines_in_values=True),
                convert_options=pcsv.ConvertOptions(
                    column_types=dict.fromkeys(header, pa.string()),
                    strings_can_be_null=False,
                ),
            )
            for block in reader:
                # Its text, counted as Arrow holds it (about the bytes read): the
                # row path counts exactly, and refuses a file that is too large.
                left -= block.nbytes
                if left < 0:
                    raise NotColumnar("over IMPORT_MAX_DECOMPRESSED_MB decompressed")
                # The csv module refuses a field over MAX_FIELD_CHARS: so does this.
                for column in block.columns:
                    if column.nbytes > MAX_FIELD_CHARS and (
                        pc.max(pc.binary_length(column)).as_py() > MAX_FIELD_CHARS
                    ):
                        raise NotColumnar("a field is over the csv module's limit")
                yield block
        except (pa.ArrowException, OSError) as exc:  # bad UTF-8, widths, gzip...
            raise NotColumnar(str(exc)) from exc

    def _arrow_stream(self) -> pa.NativeFile:
        """What `_binary()` gives, as a stream Arrow reads without Python."""
        stream = pa.OSFile(str(self.path))
        return pa.CompressedInputStream(stream, "gzip") if self._is_gzip() else stream


def _header_lines(text: IO[str], file: str) -> Iterator[str]:
    """The file's lines for the csv module to read the header from, refused once they
    pass MAX_HEADER_CHARS: a file of one endless line would otherwise be read whole."""
    left = MAX_HEADER_CHARS
    while line := text.readline(left + 1):
        left -= len(line)
        if left < 0:
            raise ImportFailure(
                f"the header is over {MAX_HEADER_CHARS:,} characters: this is not "
                "a billing export, or its first line is damaged",
                file=file,
            )
        yield line


def checked_header(header: list[str], file: str) -> list[str]:
    if len(header) > MAX_COLUMNS:
        raise ImportFailure(
            f"has {len(header):,} columns, over the {MAX_COLUMNS:,} a billing export "
            "may have",
            file=file,
        )
    return header


@lru_cache(maxsize=1)
def text_limits() -> dict[str, int]:
    """{CostRecord field: the most characters it keeps}."""
    return {
        field.attname: field.max_length
        for field in CostRecord._meta.concrete_fields
        if field.max_length
    }


def checked_texts(row: dict) -> dict:
    """The row, refused by the field whose text is longer than the database keeps,
    for importers whose values do not pass through RowParser (JSON, API pages)."""
    for field, limit in text_limits().items():
        value = row.get(field)
        if isinstance(value, str) and len(value) > limit:
            raise ImportFailure(
                f"is {len(value):,} characters, over {limit:,}", column=field
            )
    return row


class RowParser:
    """Turns raw strings into typed values, naming the row and column on failure."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.row = 0
        self.max_lengths = text_limits()

    def fail(self, column: str, message: str) -> ImportFailure:
        return ImportFailure(message, file=self.file, row=self.row, column=column)

    def text(self, record: Mapping[str, str], column: str, field: str) -> str:
        return self.text_value(record.get(column), column, field)

    def text_value(self, raw: str | None, column: str, field: str) -> str:
        value = clean(raw)
        if value is None:
            return ""
        limit = self.max_lengths.get(field)
        if limit and len(value) > limit:
            raise self.fail(column, f"is {len(value):,} characters, over {limit:,}")
        return value

    def decimal(self, record: Mapping[str, str], column: str) -> Decimal | None:
        return self.amount(record.get(column), column)

    def amount(self, raw: str | None, column: str) -> Decimal | None:
        """The cell as a Decimal, None when empty. Most cells are plain numbers that
        Decimal reads as they are: only the others take the careful path."""
        if not raw:
            return None
        try:
            amount = Decimal(raw)
            if -LARGEST_AMOUNT < amount < LARGEST_AMOUNT:  # NaN raises, ±inf is out
                return amount
        except InvalidOperation:
            pass
        return self._amount_carefully(raw, column)

    def _amount_carefully(self, raw: str, column: str) -> Decimal | None:
        value = clean(raw)
        if value is None:
            return None
        try:
            amount = parse_decimal(value)
        except InvalidOperation:
            raise self.fail(column, f"{value[:40]!r} is not a number") from None
        if abs(amount) >= LARGEST_AMOUNT:
            raise self.fail(column, f"{value[:40]!r} is too large to store")
        return amount

    def required_decimal(self, record: Mapping[str, str], column: str) -> Decimal:
        return self.required_amount(record.get(column), column)

    def required_amount(self, raw: str | None, column: str) -> Decimal:
        amount = self.amount(raw, column)
        if amount is None:
            raise self.fail(column, missing(raw, "a cost"))
        return amount

    def timestamp(self, record: Mapping[str, str], column: str) -> datetime:
        return self.timestamp_value(record.get(column), column)

    def timestamp_value(self, raw: str | None, column: str) -> datetime:
        value = clean(raw)
        if value is None:
            raise self.fail(column, missing(raw, "a date"))
        try:
            return parse_timestamp(value)
        except ValueError:
            raise self.fail(column, f"{value[:40]!r} is not a date") from None

    def tags(self, record: Mapping[str, str], column: str) -> dict:
        return self.tags_value(record.get(column), column)

    def tags_value(self, raw: str | None, column: str) -> dict:
        value = clean(raw)
        if value is None:
            return {}
        try:
            tags = json.loads(value if value.startswith("{") else "{" + value + "}")
        except json.JSONDecodeError:
            raise self.fail(column, f"{value[:40]!r} is not a JSON object") from None
        except RecursionError:
            raise self.fail(column, TOO_DEEP) from None
        if not isinstance(tags, dict):
            raise self.fail(column, "is not a JSON object of tags")
        # Real exports carry keys with stray spaces (" org"); keep the key as written.
        return tags


def missing(raw: str | None, what: str) -> str:
    """Why an empty cell is refused, naming the placeholder the file wrote for it."""
    written = (raw or "").strip()
    if not written:
        return f"is empty but {what} is required"
    return f"is {written!r}, which means no value, but {what} is required"


def first_present(*values: Decimal | None) -> Decimal | None:
    return next((value for value in values if value is not None), None)


def clean(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return None if value in NULLS else value


_GROUPED_AMOUNT = re.compile(r"^(-?)[$€£]?(-?)(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?$")


def parse_decimal(value: str) -> Decimal:
    """A plain decimal, or a spreadsheet-formatted amount such as "$10,000.00"."""
    try:
        amount = Decimal(value)
    except InvalidOperation:
        match = _GROUPED_AMOUNT.match(value)
        if not match:
            raise
        sign = "-" if match.group(1) or match.group(2) else ""
        return Decimal(sign + match.group(3).replace(",", "") + (match.group(4) or ""))
    if not amount.is_finite():
        # "NaN" and "Infinity" parse, but one of them would poison every total.
        raise InvalidOperation(value)
    return amount


_TIMESTAMP_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%z",
    "%Y-%m-%dT%H:%M:%SZ",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%dT%H:%M:%S.%f%z",
    "%Y-%m-%d %H:%M:%S.%f",
    "%Y-%m-%d",
    "%m/%d/%Y",
    "%m/%d/%y",
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y %I:%M:%S %p",
)


@lru_cache(maxsize=65536)
def parse_timestamp(value: str) -> datetime:
    """UTC datetime from the shapes real exports use (ISO with or without T and Z,
    M/D/YYYY, M/D/YY). Cached: a month of hourly data repeats few distinct values."""
    for pattern in _TIMESTAMP_FORMATS:
        try:
            parsed = datetime.strptime(value, pattern)  # noqa: DTZ007 (made UTC below)
        except ValueError:
            continue
        return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    overflow = _HOUR_OVERFLOW.match(value)
    if overflow:
        # The FOCUS 1.2 appendix writes "2023-02-01T30:00:00Z": read hours past 23 as
        # running into the next day rather than refusing the specification's own data.
        day, hours, minutes, seconds = overflow.groups()
        start = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC)
        return start + timedelta(
            hours=int(hours), minutes=int(minutes), seconds=int(seconds)
        )
    raise ValueError(value)


_HOUR_OVERFLOW = re.compile(r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}):([0-5]\d):([0-5]\d)Z?$")


class ProviderError(Exception):
    """The provider failed or refused for now (5xx, rate limit, network): try later."""

    http_status: int | None = None


class Fetcher(Protocol):
    """Fetches one kind of source. Optional: a static `syncs(source) -> bool`, false
    for a source of that kind that is fed by file imports instead (no bucket set)."""

    kind: str

    def fetch(self, *, source: BillingSource, since: datetime) -> Iterator[dict]:
        """Normalised rows (see importers.base.new_row) for every billing period from
        the one containing `since` up to now, complete for each period it yields.

        A fetcher that skips periods it knows to be unchanged sets `covered_periods`
        (the month starts it restates in full) by the time fetch() returns; the other
        periods keep their rows. `billing_sync` reads every row into a spool before
        it opens the import's transaction; state a fetcher keeps of a sync (seen
        ETags) it writes in an optional `remember(source)`, which the sync calls
        inside that transaction, so a failed import records nothing."""
        ...
