"""Input that costs more than it weighs: each finding of the review, made in the test,
fails fast with a message naming the file and the limit, in bounded memory, and leaves
no run running and nothing loaded."""

import csv
import gzip
import io
import json
import os
import subprocess
import sys
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import IntegrityError
from django.utils.datastructures import MultiValueDict

from billing.forms import UploadForm
from billing.models import CostRecord, ImportRun
from tests.billing.importing import run_import
from tests.billing.test_views import upload, upload_files
from tests.data import FOCUS_REAL

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
MB = 1 << 20
HEADER, *ROWS = FOCUS_REAL.read_bytes().splitlines(keepends=True)


@pytest.fixture
def finance_client(client, world, settings, tmp_path, eager_tasks):
    settings.MEDIA_ROOT = tmp_path
    client.force_login(world.finance)
    return client


def gzip_of_one_endless_line(path: Path, megabytes: int) -> Path:
    """A FOCUS header, then one line of `megabytes` MB: what a 204 KB gzip held."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: the gzip format
    with path.open("wb") as out:
        out.write(packer.compress(HEADER))
        chunk = b"x" * MB
        for _ in range(megabytes):
            out.write(packer.compress(chunk))
        out.write(packer.flush())
    return path


def parquet_of_a_repeated_string(path: Path, rows: int = 10_000) -> Path:
    """The real FOCUS sample, its rows repeated to `rows`, with one 1 MB string in
    ChargeDescription on every row: dictionary encoding stores it once, and the file
    was written without Arrow's schema, as another tool writes it."""
    table = pcsv.read_csv(FOCUS_REAL)
    table = pa.concat_tables([table] * (rows // table.num_rows))
    repeated = pa.DictionaryArray.from_arrays(
        pa.array([0] * table.num_rows, pa.int32()), pa.array(["x" * MB])
    )
    at = table.schema.get_field_index("ChargeDescription")
    table = table.set_column(at, "ChargeDescription", repeated)
    pq.write_table(table, path, store_schema=False)
    return path


READ_ROWS = """
import json, resource, sys
import django
django.setup()
from billing.importers import ImportFailure, importer_for
from pathlib import Path
path = Path(sys.argv[1])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    rows = sum(1 for _ in importer_for(path).rows(path))
    error = None
except ImportFailure as failure:
    error = str(failure)
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({"error": error, "grown_mb": grown // 1024}))
"""


def read_in_a_process(path: Path) -> dict:
    """What reading every row of the file says, and how much the peak memory of a
    fresh process grew while reading it (Python's and Arrow's alike)."""
    result = subprocess.run(
        [sys.executable, "-c", READ_ROWS, str(path)],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "spendtracker.settings"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(result.stdout.splitlines()[-1])


# What a worker may grow by reading one hostile file: the review saw 480 MB and 1.1 GB.
MEMORY_BOUND_MB = 100


def test_a_gzip_of_one_200_mb_line_fails_at_the_line_limit_in_bounded_memory(
    tmp_path,
):
    path = gzip_of_one_endless_line(tmp_path / "focus.csv.gz", megabytes=200)
    assert path.stat().st_size < 300_000
    read = read_in_a_process(path)
    assert read["error"] == (
        "focus.csv.gz, row 2: the line is over 4,000,000 characters: this is not a "
        "billing export, or the file is damaged"
    )
    assert read["grown_mb"] < MEMORY_BOUND_MB
    code, result = run_import(path, "FOCUS")
    assert (code, result["status"]) == (1, "failed")
    assert "row 2: the line is over 4,000,000 characters" in result["error"]
    assert not CostRecord.objects.exists()


def test_a_parquet_file_repeating_a_1_mb_string_fails_on_its_arrow_lengths(
    tmp_path,
):
    path = parquet_of_a_repeated_string(tmp_path / "focus.parquet")
    assert path.stat().st_size < 2 * MB
    read = read_in_a_process(path)
    assert read["error"] == (
        "focus.parquet, row 1, column ChargeDescription: holds a value of over "
        "1,000,000 bytes, the most a field of a billing export may have"
    )
    assert read["grown_mb"] < MEMORY_BOUND_MB
    code, result = run_import(path, "FOCUS")
    assert (code, result["status"]) == (1, "failed")
    assert not CostRecord.objects.exists()


def test_parquet_tags_that_would_expand_past_the_batch_limit_are_refused(tmp_path):
    """A map of tags whose one value, under the field limit, repeats on every row:
    read as a dictionary, refused before the batch becomes Python objects."""
    table = pcsv.read_csv(FOCUS_REAL)
    table = pa.concat_tables([table] * 10)
    value = pa.DictionaryArray.from_arrays(
        pa.array([0] * table.num_rows, pa.int32()), pa.array(["x" * 900_000])
    )
    tags = pa.MapArray.from_arrays(
        pa.array(range(table.num_rows + 1), pa.int32()),
        pa.array(["team"] * table.num_rows),
        value,
    )
    at = table.schema.get_field_index("Tags")
    path = tmp_path / "tags.parquet"
    pq.write_table(table.set_column(at, "Tags", tags), path, store_schema=False)
    read = read_in_a_process(path)
    assert read["error"] == (
        "tags.parquet, column Tags: holds over 67,108,864 bytes of text in rows 1 "
        "to 10,000: no billing export repeats so much"
    )
    assert read["grown_mb"] < MEMORY_BOUND_MB


def test_a_gzip_past_the_decompressed_limit_fails_naming_the_limit(tmp_path, settings):
    settings.IMPORT_MAX_DECOMPRESSED_MB = 1
    path = tmp_path / "focus.csv.gz"
    path.write_bytes(gzip.compress(HEADER + b"".join(ROWS) * 2))  # 1.4 MB of rows
    code, result = run_import(path, "FOCUS")
    assert (code, result["status"]) == (1, "failed")
    assert result["error"] == (
        "focus.csv.gz: decompresses to over 1 MB, the most an import reads of one "
        "file (IMPORT_MAX_DECOMPRESSED_MB): split the export, or ask an "
        "administrator to raise the limit"
    )
    assert not CostRecord.objects.exists()


def zip_of(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return path


def test_a_zip_bomb_is_refused_before_it_is_extracted(tmp_path, settings):
    bomb = zip_of(tmp_path / "delivery.zip", {"focus.csv": HEADER + b"0" * 50 * MB})
    tracemalloc.start()
    try:
        code, result = run_import(bomb, "FOCUS")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (code, result["status"]) == (1, "failed")
    assert "delivery.zip/focus.csv: expands 1,0" in result["error"]
    assert "over the 200 times a billing export does" in result["error"]
    assert peak < 16 * MB
    settings.IMPORT_MAX_DECOMPRESSED_MB = 1
    large = zip_of(tmp_path / "large.zip", {"focus.csv": FOCUS_REAL.read_bytes() * 2})
    code, result = run_import(large, "FOCUS")
    assert "large.zip/focus.csv: decompresses to over 1 MB" in result["error"]
    assert not CostRecord.objects.exists()


def test_an_upload_over_the_size_limit_is_refused_and_nothing_is_kept(
    finance_client, settings, tmp_path
):
    settings.UPLOAD_MAX_MB = 1
    settings.FILE_UPLOAD_TEMP_DIR = spool = tmp_path / "spool"
    spool.mkdir()
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 0  # every file a request keeps spools here
    response = upload(finance_client, HEADER + b"".join(ROWS) * 3)  # 2.1 MB
    assert response.status_code == 400
    assert response.json()["errors"]["file"] == [
        "This upload weighs 3 MB, over the 1 MB an upload may weigh: upload the "
        "export compressed (CSV.gz, zip), or split it by month."
    ]
    response = upload_files(
        finance_client, {"a.csv": b"x" * (MB // 2 + 1), "b.csv": b"y" * (MB // 2)}
    )
    assert response.json()["errors"]["file"][0].startswith("This upload weighs 2 MB")
    assert not ImportRun.objects.filter(origin=ImportRun.Origin.UPLOAD).exists()
    assert list(spool.iterdir()) == []  # the files were skipped, never written
    assert sorted(path.name for path in tmp_path.iterdir()) == ["spool"]
    assert upload(finance_client, FOCUS_REAL.read_bytes()).status_code == 202


def test_files_over_the_size_limit_in_a_request_of_no_stated_weight_are_refused(
    world, settings
):
    """A request without Content-Length passes the first check: the form's holds."""
    settings.UPLOAD_MAX_MB = 1
    files = [SimpleUploadedFile(name, b"x" * (MB // 2 + 1)) for name in "ab"]
    form = UploadForm(
        {"source": str(world.source.pk), "file_format": "auto"},
        MultiValueDict({"file": files}),
    )
    assert form.errors["file"] == [
        "These files weigh 2 MB, over the 1 MB an upload may weigh: upload the "
        "export compressed (CSV.gz, zip), or split it by month."
    ]


def test_the_upload_request_of_a_gzip_bomb_only_saves_the_file(
    client, world, settings, tmp_path, queue_down, django_capture_on_commit_callbacks
):
    settings.MEDIA_ROOT = tmp_path
    client.force_login(world.finance)
    bomb = gzip_of_one_endless_line(tmp_path / "bomb.csv.gz", megabytes=200)
    # A first upload loads the modules an upload uses, which the trace would count.
    with django_capture_on_commit_callbacks(execute=True):
        upload(client, FOCUS_REAL.read_bytes())
    tracemalloc.start()
    try:
        with django_capture_on_commit_callbacks(execute=True):
            response = upload(client, bomb.read_bytes(), "focus.csv.gz")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert response.status_code == 202
    run = ImportRun.objects.get(pk=response.json()["run"])
    assert run.status == ImportRun.Status.QUEUED  # for a worker; none read it here
    assert Path(run.upload.path).read_bytes() == bomb.read_bytes()
    assert peak < 8 * MB


def deep_tags_csv(depth: int = 100_000) -> bytes:
    """The real sample's header and first row, its Tags cell nested `depth` levels
    deep."""
    header, values = (
        next(csv.reader([line.decode("utf-8-sig")])) for line in (HEADER, ROWS[0])
    )
    values[header.index("Tags")] = '{"a":' * depth + "1" + "}" * depth
    out = io.StringIO()
    csv.writer(out).writerows([header, values])
    return out.getvalue().encode()


def test_tags_nested_100000_levels_deep_fail_the_upload_and_the_page_stops_polling(
    finance_client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = upload(finance_client, deep_tags_csv(), "deep.csv")
    status = finance_client.get(response.json()["status_url"]).json()
    assert status["status"] == "failed"
    assert status["error"] == (
        "deep.csv, row 2, column Tags: is JSON nested thousands of levels deep, "
        "which no billing export is"
    )
    assert not CostRecord.objects.exists()


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("deep.ndjson", b"[" * 100_000 + b"]" * 100_000 + b"\n"),
        ("deep.json", b"[" * 100_000 + b"]" * 100_000),
    ],
)
def test_a_json_file_nested_too_deep_fails_with_its_name(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    code, result = run_import(path, "OpenAI", format="openai")
    assert (code, result["status"]) == (1, "failed")
    assert result["error"].startswith(f"{name}")
    assert "is JSON nested thousands of levels deep" in result["error"]


def test_an_unexpected_error_fails_the_run_saying_where_the_details_are(
    finance_client, django_capture_on_commit_callbacks, monkeypatch, caplog
):
    def bug(*args, **kwargs):
        raise RecursionError("maximum recursion depth exceeded in the loader")

    monkeypatch.setattr("billing.services.cost_records_load_files", bug)
    with django_capture_on_commit_callbacks(execute=True):
        response = upload(finance_client, FOCUS_REAL.read_bytes())
    run = ImportRun.objects.get(pk=response.json()["run"])
    assert run.status == ImportRun.Status.FAILED
    assert run.error == (
        "focus.csv: the import stopped on an unexpected error (RecursionError), and "
        "nothing of it was loaded. The details are in the log, under import run "
        f"{run.pk}."
    )
    assert "maximum recursion depth exceeded in the loader" in caplog.text
    assert not CostRecord.objects.exists()


def test_a_database_error_is_not_shown_raw_on_the_runs_page(
    finance_client, django_capture_on_commit_callbacks, monkeypatch, caplog
):
    raw = 'duplicate key value violates unique constraint "billing_costrecord_pkey"'

    def refused(*args, **kwargs):
        raise IntegrityError(raw)

    monkeypatch.setattr("billing.services.cost_records_load_files", refused)
    with django_capture_on_commit_callbacks(execute=True):
        response = upload(finance_client, FOCUS_REAL.read_bytes())
    status = finance_client.get(response.json()["status_url"]).json()
    assert status["status"] == "failed"
    assert "the import stopped on a database error" in status["error"]
    page = finance_client.get(status["url"]).content.decode()
    for shown in (status["error"], page):
        assert "billing_costrecord_pkey" not in shown
    assert raw in caplog.text


def test_a_json_value_longer_than_its_field_keeps_fails_by_name_not_in_the_database(
    tmp_path,
):
    sample = (ROOT / "tests" / "data" / "gcp" / "standard_export.ndjson").read_text()
    first = json.loads(sample.splitlines()[0])
    first["billing_account_id"] = "x" * 5000
    path = tmp_path / "gcp.ndjson"
    path.write_text(json.dumps(first) + "\n")
    code, result = run_import(path, "GCP", format="gcp")
    assert (code, result["status"]) == (1, "failed")
    assert result["error"] == (
        "gcp.ndjson, row 1, column billing_account_id: is 5,000 characters, over 200"
    )
