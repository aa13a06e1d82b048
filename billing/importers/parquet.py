"""Parquet exports, read one record batch at a time so memory stays flat.

Values come out as text, so that one RowParser reads and names bad values alike in CSV
and Parquet files.
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

from billing.importers.base import ImportFailure, checked_header

PARQUET_MAGIC = b"PAR1"
PARQUET_BATCH_ROWS = 10_000


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
        with _parquet_errors(self.path.name), pq.ParquetFile(self.path) as parquet:
            for batch in parquet.iter_batches(
                batch_size=PARQUET_BATCH_ROWS, columns=columns
            ):
                names = batch.schema.names
                texts = [_column_as_text(column) for column in batch.columns]
                for values in zip(*texts, strict=True):
                    number += 1
                    yield number, names, values


def _column_as_text(column: pa.Array) -> list[str]:
    """One batch's column as text, converted column-wise where Arrow can do it."""
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
