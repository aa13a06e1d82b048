"""Parquet exports, read one record batch at a time so memory stays flat.

Values come out as text, so that one RowParser reads and names bad values alike in CSV
and Parquet files. Text columns are read as Arrow dictionaries, each distinct value
once: a file of a few kilobytes can repeat one long string on every row, which read
plainly would fill memory many times over. Lengths are checked on the Arrow arrays,
before any value becomes a Python object.
"""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from billing.importers.base import MAX_FIELD_CHARS, ImportFailure, checked_header

PARQUET_MAGIC = b"PAR1"
PARQUET_BATCH_ROWS = 10_000
# The text a nested column (tags as a map) may expand to in one batch: real tags
# take a few kilobytes a row, so some megabytes a batch.
MAX_BATCH_TEXT_BYTES = 64 << 20


def is_parquet(path: Path) -> bool:
    with path.open("rb") as probe:
        return probe.read(len(PARQUET_MAGIC)) == PARQUET_MAGIC


@dataclass
class ParquetExport:
    """A Parquet export, read one record batch at a time."""

    path: Path

    def header(self) -> list[str]:
        with _parquet_errors(self.path.name), pq.ParquetFile(self.path) as parquet:
            return checked_header(list(parquet.schema_arrow.names), self.path.name)

    def records(
        self, columns: list[str] | None = None
    ) -> Iterator[tuple[int, dict[str, str]]]:
        """(row number counting from 1, {column: value as text}) for each row: text,
        so that one parser reads and names bad values alike in CSV and Parquet."""
        for number, names, values in self._text_rows(columns):
            yield number, dict(zip(names, values, strict=True))

    def lines(self) -> Iterator[tuple[int, list[str]]]:
        """(row number counting from 1, values as text in header order) for each row,
        like CsvFile.lines()."""
        for number, _, values in self._text_rows():
            yield number, list(values)

    def _text_rows(
        self, columns: list[str] | None = None
    ) -> Iterator[tuple[int, list[str], tuple[str, ...]]]:
        number = 0
        with _parquet_errors(self.path.name), self._opened() as parquet:
            for batch in parquet.iter_batches(
                batch_size=PARQUET_BATCH_ROWS, columns=columns
            ):
                names = batch.schema.names
                for name, column in zip(names, batch.columns, strict=True):
                    self._length_check(column, name, number)
                texts = [_column_as_text(column) for column in batch.columns]
                for values in zip(*texts, strict=True):
                    number += 1
                    yield number, names, values

    def _opened(self) -> pq.ParquetFile:
        """The file, every text column (nested ones too) read as a dictionary."""
        with pq.ParquetFile(self.path) as probe:
            schema = probe.schema
            texts = [
                schema.column(i).path
                for i in range(len(schema))
                if schema.column(i).physical_type == "BYTE_ARRAY"
            ]
        return pq.ParquetFile(self.path, read_dictionary=texts)

    def _length_check(self, column: pa.Array, name: str, before: int) -> None:
        """Refuse a value over MAX_FIELD_CHARS, as the CSV reader refuses such a
        field, and a nested column (tags) whose batch would expand to over
        MAX_BATCH_TEXT_BYTES of text, before any of it is turned into Python."""
        longest, total = _text_bytes(column)
        if longest > MAX_FIELD_CHARS:
            raise ImportFailure(
                f"holds a value of over {MAX_FIELD_CHARS:,} bytes, the most a field "
                "of a billing export may have",
                file=self.path.name,
                row=_first_longer(column, MAX_FIELD_CHARS, before),
                column=name,
            )
        if pa.types.is_nested(column.type) and total > MAX_BATCH_TEXT_BYTES:
            raise ImportFailure(
                f"holds over {MAX_BATCH_TEXT_BYTES:,} bytes of text in rows "
                f"{before + 1:,} to {before + len(column):,}: no billing export "
                "repeats so much",
                file=self.path.name,
                column=name,
            )


def _text_bytes(column: pa.Array) -> tuple[int, int]:
    """The longest text of the column and the bytes of text it holds, as they
    would be once every value is written out (a dictionary's value once per row
    that uses it), both in bytes."""
    kind = column.type
    if pa.types.is_struct(kind):
        children = [_text_bytes(column.field(i)) for i in range(kind.num_fields)]
        return max((c[0] for c in children), default=0), sum(c[1] for c in children)
    if pa.types.is_map(kind):
        keys, items = _text_bytes(column.keys), _text_bytes(column.items)
        return max(keys[0], items[0]), keys[1] + items[1]
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return _text_bytes(column.flatten())
    lengths = _lengths(column)
    if lengths is None:
        return 0, 0
    return pc.max(lengths).as_py() or 0, pc.sum(lengths).as_py() or 0


def _lengths(column: pa.Array) -> pa.Array | None:
    """The byte length of each row's value of a column of text (None for another
    kind), computed once per distinct value of a dictionary."""
    if isinstance(column, pa.DictionaryArray):
        return pc.take(pc.binary_length(column.dictionary), column.indices)
    kind = column.type
    text_kinds = (
        pa.types.is_string,
        pa.types.is_large_string,
        pa.types.is_binary,
        pa.types.is_large_binary,
    )
    return pc.binary_length(column) if any(is_a(kind) for is_a in text_kinds) else None


def _first_longer(column: pa.Array, limit: int, before: int) -> int | None:
    """The row number of the column's first value over `limit` bytes."""
    lengths = _lengths(column)
    if lengths is None:  # nested: its rows are not counted apart
        return None
    return before + pc.index(pc.greater(lengths, limit), True).as_py() + 1


def _column_as_text(column: pa.Array) -> list[str]:
    """One batch's column as text, converted column-wise where Arrow can do it."""
    if isinstance(column, pa.DictionaryArray):
        distinct = [_as_text(value) for value in column.dictionary.to_pylist()]
        return ["" if i is None else distinct[i] for i in column.indices.to_pylist()]
    kind = column.type
    if (
        pa.types.is_floating(kind)
        or pa.types.is_integer(kind)
        or pa.types.is_decimal(kind)
    ):
        # For a double, Arrow writes the shortest text that reads back as the same
        # double: the amount AWS meant, digit for digit.
        column = pc.cast(column, pa.string())
    elif pa.types.is_timestamp(kind):
        # A batch holds few distinct hours: convert each once.
        encoded = pc.dictionary_encode(column)
        moments = [_as_text(moment) for moment in encoded.dictionary.to_pylist()]
        return ["" if i is None else moments[i] for i in encoded.indices.to_pylist()]
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return ["" if value is None else value for value in column.to_pylist()]
    return [_as_text(value) for value in column.to_pylist()]


@contextmanager
def _parquet_errors(file: str) -> Iterator[None]:
    """Turn what a damaged Parquet file raises into an ImportFailure that names it."""
    try:
        yield
    except (pa.ArrowException, OSError) as exc:
        raise ImportFailure(
            f"is not a readable Parquet file ({exc})", file=file
        ) from exc


def _as_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.astimezone(UTC).isoformat()
    if isinstance(value, list):
        # A Parquet map arrives as [(key, value), ...].
        return json.dumps(dict(value))
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)
