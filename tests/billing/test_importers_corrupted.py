"""Every importer, fed the real samples corrupted at random (columns dropped, shuffled
or repeated, cells of the wrong type, huge or nested thousands deep, random bytes,
another encoding, compression cut short): it imports, or fails with its own
ImportFailure naming the file; it reads in bounded memory; and a failed import leaves
nothing in the database.

Hypothesis runs derandomized (the same examples on every run, no example database),
a few examples per sample, so that the module takes well under a minute.
"""

import csv
import gzip
import io
import json
import tracemalloc
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing.importers import ImportFailure, importer_for
from billing.models import BillingSource, CostRecord, ImportRun
from billing.services import billing_import_file
from tests.data import AWS_CUR_LEGACY, DATA, FOCUS_REAL, SAMPLES

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
# What reading one corrupted sample may allocate in Python at its peak: the samples
# are under 100 KB, a huge cell at most 5 MB, and the line limit stops at 4 MB.
MEMORY_BOUND = 64 << 20
TABLE_ROWS = 25  # of each CSV sample: enough rows to corrupt, few enough to be quick

CSV_SAMPLES = {
    "focus": FOCUS_REAL,
    "azure": SAMPLES
    / "native-azure-cost-details"
    / "finops-toolkit__EA_ActualCost_Small.csv",
    "aws-cur": AWS_CUR_LEGACY,
    "gcp": DATA / "gcp" / "detailed_export.csv",
    "invoice-csv": ROOT / "docs" / "invoice-template.csv",
}
JSON_SAMPLES = {
    "gcp": DATA / "gcp" / "standard_export.ndjson",
    "openai": DATA / "openai" / "costs_saved.json",
    "anthropic": DATA / "anthropic" / "cost_report_saved.json",
}
CORRUPTED = settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def deep(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


# What a cell or a JSON value becomes: another type, nothing, a huge value, or one
# nested a little or far too deep.
WRONG_TYPES = ["NaN", "-Infinity", "1e999999", "2026-13-45", "{", "9" * 40, "é€"]
bad_values = {
    "type": st.sampled_from(WRONG_TYPES) | st.text(max_size=20),
    "empty": st.sampled_from(["", "null", "(null)"]),
    "huge": st.sampled_from([1_000_001, 5_000_000]).map(lambda n: "x" * n),
    "deep": st.sampled_from([100_000, 900]).map(deep),
}
# Columns holding JSON (tags, labels, credits): a deep value goes there.
JSON_COLUMNS = ("tags", "labels", "credits", "system_labels", "resource_tags")


def table_of(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8-sig", newline="") as text:
        return list(csv.reader(text))[: TABLE_ROWS + 1]


@st.composite
def corrupted_tables(draw, table: list[list[str]]) -> list[list[str]]:
    """The table with a few of its columns dropped, shuffled, repeated or made of
    bad values."""
    header, *rows = (list(row) for row in table)
    width = len(header)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["drop", "shuffle", "repeat", *bad_values]))
        json_columns = [i for i, name in enumerate(header) if _holds_json(name)]
        column = draw(
            st.sampled_from(json_columns)
            if json_columns and kind == "deep"
            else st.integers(0, width - 1)
        )
        if kind == "drop" and width > 1:
            for row in (header, *rows):
                del row[column]
            width -= 1
        elif kind == "shuffle":
            header = draw(st.permutations(header))
        elif kind == "repeat":
            for row in (header, *rows):
                row.append(row[column])
            width += 1
        elif kind in bad_values and rows:
            for row in draw(st.lists(st.sampled_from(rows), min_size=1, max_size=3)):
                row[column] = draw(bad_values[kind])
    return [header, *rows]


def _holds_json(name: str) -> bool:
    return name.lower().replace("/", "_").endswith(JSON_COLUMNS)


def csv_bytes(table: list[list[str]]) -> bytes:
    out = io.StringIO()
    csv.writer(out).writerows(table)
    return out.getvalue().encode()


def corrupted_json(value: Any, draw: Callable, kind: str) -> Any:
    """The document with one value somewhere in it replaced by a bad value of that
    kind, or its key removed."""
    if isinstance(value, dict) and value:
        key = draw(st.sampled_from(sorted(value)))
        if kind == "drop":
            return {k: v for k, v in value.items() if k != key}
        return {**value, key: corrupted_json(value[key], draw, kind)}
    if isinstance(value, list) and value:
        at = draw(st.integers(0, len(value) - 1))
        return [*value[:at], corrupted_json(value[at], draw, kind), *value[at + 1 :]]
    if kind == "type":
        return draw(st.one_of(bad_values[kind], st.integers(), st.none(), st.just([])))
    return draw(bad_values.get(kind, bad_values["empty"]))


@st.composite
def corrupted_json_bytes(draw, path: Path) -> bytes:
    text = path.read_text(encoding="utf-8")
    kind = draw(st.sampled_from(["drop", *bad_values]))
    if path.suffix == ".ndjson":
        lines = [json.loads(line, parse_float=Decimal) for line in text.splitlines()]
        lines = corrupted_json(lines, draw, kind)
        return "\n".join(_dumped(line) for line in lines).encode()
    document = corrupted_json(json.loads(text, parse_float=Decimal), draw, kind)
    return _dumped(document).encode()


def _dumped(value: Any) -> str:
    if isinstance(value, str) and value.startswith('{"a":'):
        return value  # a deep value goes in as written: json.dumps would recurse
    if isinstance(value, dict):
        return (
            "{"
            + ",".join(f"{json.dumps(k)}:{_dumped(v)}" for k, v in value.items())
            + "}"
        )
    if isinstance(value, list):
        return "[" + ",".join(_dumped(v) for v in value) + "]"
    if isinstance(value, Decimal):
        return str(value)
    return json.dumps(value)


@st.composite
def damaged_bytes(draw, content: bytes) -> tuple[str, bytes]:
    """The file's bytes as they are, with random bytes written over or into them,
    in another encoding, or gzipped and cut short: (suffix to add, bytes)."""
    kind = draw(st.sampled_from(["as is", "bytes", "encoding", "gzip cut"]))
    if kind == "bytes":
        at = draw(st.integers(0, len(content)))
        noise = draw(st.binary(min_size=1, max_size=64))
        keep = draw(st.booleans())
        return "", content[:at] + noise + content[at + (0 if keep else len(noise)) :]
    if kind == "encoding":
        encoding = draw(st.sampled_from(["utf-16", "latin-1", "cp1252"]))
        text = content.decode("utf-8") + "é€"
        return "", text.encode(encoding, errors="replace")
    if kind == "gzip cut":
        packed = gzip.compress(content)
        return ".gz", packed[: draw(st.integers(10, len(packed) - 1))]
    return "", content


def parquet_bytes(table: list[list[str]]) -> bytes:
    header, *rows = table
    names = [name or f"column {i}" for i, name in enumerate(header)]
    columns = {
        f"{i}": [row[i] if i < len(row) else None for row in rows]
        for i in range(len(names))
    }
    out = io.BytesIO()
    pq.write_table(pa.table(columns).rename_columns(names), out)
    return out.getvalue()


def read_rows(path: Path, file_format: str) -> None:
    """Read every row as the importer does, in bounded memory; only the importer's
    own ImportFailure, naming the file, may stop it."""
    tracemalloc.start()
    try:
        for _ in importer_for(path, file_format).rows(path):
            pass
    except ImportFailure as failure:
        assert path.name in str(failure) or "format" in str(failure)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < MEMORY_BOUND


def import_and_roll_back(path: Path, file_format: str) -> None:
    """Import it for real: it is imported, or failed with nothing of it loaded and a
    message of the importer's own (not a bug's); never left running."""
    with transaction.atomic():
        outcome = billing_import_file(
            path=path, source_name="Corrupted", file_format=file_format
        )
        run = outcome.run
        assert run.status in {ImportRun.Status.IMPORTED, ImportRun.Status.FAILED}
        if run.status == ImportRun.Status.FAILED:
            assert "the import stopped on" not in run.error, run.error
            assert not CostRecord.objects.exists()
            assert not BillingSource.objects.filter(name="Corrupted").exists()
        transaction.set_rollback(True)


def check(tmp_path: Path, name: str, content: bytes, file_format: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    read_rows(path, file_format)
    import_and_roll_back(path, file_format)
    path.unlink()


@pytest.mark.parametrize("file_format", sorted(CSV_SAMPLES))
def test_a_corrupted_csv_export_imports_or_fails_clearly_and_leaves_nothing(
    tmp_path, file_format
):
    table = table_of(CSV_SAMPLES[file_format])

    @CORRUPTED
    @given(data=st.data())
    def run(data):
        corrupted = csv_bytes(data.draw(corrupted_tables(table)))
        suffix, content = data.draw(damaged_bytes(corrupted))
        check(tmp_path, f"export.csv{suffix}", content, file_format)

    run()


@pytest.mark.parametrize("file_format", sorted(JSON_SAMPLES))
def test_a_corrupted_json_export_imports_or_fails_clearly_and_leaves_nothing(
    tmp_path, file_format
):
    path = JSON_SAMPLES[file_format]

    @CORRUPTED
    @given(data=st.data())
    def run(data):
        suffix, content = data.draw(
            damaged_bytes(data.draw(corrupted_json_bytes(path)))
        )
        check(tmp_path, f"export{path.suffix}{suffix}", content, file_format)

    run()


@pytest.mark.parametrize("file_format", ["focus", "aws-cur"])
def test_a_corrupted_parquet_export_imports_or_fails_clearly_and_leaves_nothing(
    tmp_path, file_format
):
    table = table_of(CSV_SAMPLES[file_format])

    @CORRUPTED
    @given(data=st.data())
    def run(data):
        content = parquet_bytes(data.draw(corrupted_tables(table)))
        if data.draw(st.booleans()):
            content = content[: data.draw(st.integers(0, len(content) - 1))]
        check(tmp_path, "export.parquet", content, file_format)

    run()
