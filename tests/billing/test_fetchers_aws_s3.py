"""The AWS CUR fetcher against a local fake S3: moto in server mode on 127.0.0.1, to
which the tests deliver exports as AWS does (data files first, then the manifest) with
boto3, and whose request log shows what the sync downloaded.

The exports are made from the real legacy CUR sample (November 2023), renamed to CUR
2.0 columns where the layout is CUR 2.0, plus a December made from its first lines.
"""

import csv
import gzip
import io
import json
import logging
import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

import boto3
import pytest
import requests
import time_machine
from django.core.management import call_command
from django.core.management.base import CommandError
from moto.server import ThreadedMotoServer

from billing.importers import aws_s3
from billing.importers.aws_cur import COLUMNS
from billing.importers.base import ProviderError
from billing.models import BillingSource, CostRecord
from billing.services import billing_sync_source
from tests.data import SAMPLES

pytestmark = pytest.mark.django_db

LEGACY_CUR = (
    SAMPLES / "native-aws-cur-legacy" / "sample-anonymous-aws-export-dataset.csv"
)
NOW = datetime(2023, 12, 15, 12, tzinfo=UTC)  # the window: November and December
BUCKET = "acme-billing"
KEY_ID = "AKIATESTS0NLY0000001"
SECRET = "tests0nly/Secret+Key/9f8e7d6c5b4a39281706f5e4d3c2b1a0"
EXPORT = "costs"
DATA = f"cur/{EXPORT}/data"
METADATA = f"cur/{EXPORT}/metadata"


def legacy_rows() -> list[dict[str, str]]:
    with LEGACY_CUR.open(encoding="utf-8-sig", newline="") as text:
        return list(csv.DictReader(text))


def as_cur2(row: dict[str, str]) -> dict[str, str]:
    """The line in CUR 2.0 column names, keeping the columns the importer reads."""
    return {cur2: row[legacy] for legacy, cur2 in COLUMNS.values() if legacy in row}


def moved_to_december(row: dict[str, str]) -> dict[str, str]:
    return {
        column: value.replace("2023-12-01T", "2024-01-01T").replace(
            "2023-11-", "2023-12-"
        )
        for column, value in row.items()
    }


NOVEMBER = [as_cur2(row) for row in legacy_rows()]
DECEMBER = [moved_to_december(row) for row in NOVEMBER[:40]]


def gzip_csv(rows: list[dict[str, str]]) -> bytes:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return gzip.compress(text.getvalue().encode())


def billed(rows: list[dict[str, str]], column: str = "line_item_unblended_cost"):
    """The files' own total, parsed independently of the importer."""
    return sum((Decimal(row[column]) for row in rows), Decimal(0))


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_endpoint, monkeypatch) -> Any:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    requests.post(f"{s3_endpoint}/moto-api/reset", timeout=10).raise_for_status()
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
    )
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture(autouse=True)
def now() -> Iterator[None]:
    with time_machine.travel(NOW):
        yield


@pytest.fixture
def source(s3_endpoint, settings) -> BillingSource:
    settings.SOURCE_ENDPOINT_ALLOWLIST = [s3_endpoint]
    source = BillingSource(
        name="AWS payer",
        kind="aws-cur",
        config={
            "bucket": BUCKET,
            "prefix": "cur",
            "export": EXPORT,
            "region": "us-east-1",
            "endpoint_url": s3_endpoint,
        },
    )
    source.credentials = {"access_key_id": KEY_ID, "secret_access_key": SECRET}
    source.save()
    return source


@dataclass
class Export:
    """Delivers a CUR 2.0 export the way AWS does: data files, then the manifest."""

    s3: Any

    def deliver(self, period: str, *files: list[dict[str, str]]) -> None:
        uris = []
        for number, rows in enumerate(files, start=1):
            key = f"{DATA}/BILLING_PERIOD={period}/{EXPORT}-{number:05}.csv.gz"
            self.s3.put_object(Bucket=BUCKET, Key=key, Body=gzip_csv(rows))
            uris.append(f"s3://{BUCKET}/{key}")
        manifest = {
            "executionId": f"execution-{period}-{len(uris)}",
            "exportArn": "arn:aws:bcm-data-exports:us-east-1:123456789012:export/costs",
            "dataFiles": uris,
            "columns": [],
        }
        self.s3.put_object(
            Bucket=BUCKET,
            Key=f"{METADATA}/BILLING_PERIOD={period}/{EXPORT}-Manifest.json",
            Body=json.dumps(manifest).encode(),
        )

    def delete_manifest(self, period: str) -> None:
        key = f"{METADATA}/BILLING_PERIOD={period}/{EXPORT}-Manifest.json"
        self.s3.delete_object(Bucket=BUCKET, Key=key)


@pytest.fixture
def export(s3) -> Export:
    return Export(s3)


class RequestLog:
    """What the fake S3 served, from its own request log (werkzeug's)."""

    LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<target>\S+) HTTP/[\d.]+"')

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self.caplog = caplog
        caplog.set_level(logging.INFO, logger="werkzeug")

    def downloads(self) -> list[str]:
        """The keys of every object fetched with GET, manifests aside."""
        keys = []
        for record in self.caplog.records:
            if record.name != "werkzeug":
                continue
            line = self.LINE.search(record.getMessage())
            if not line or line["method"] != "GET":
                continue
            target = urlsplit(line["target"])
            key = unquote(target.path).removeprefix(f"/{BUCKET}/")
            if "list-type" not in target.query and not key.endswith("Manifest.json"):
                keys.append(key)
        return keys

    def clear(self) -> None:
        self.caplog.clear()


@pytest.fixture
def request_log(caplog) -> RequestLog:
    return RequestLog(caplog)


def sync_json(name: str = "AWS payer") -> tuple[int, dict]:
    out = io.StringIO()
    try:
        call_command("billing_sync", "--source", name, json=True, stdout=out)
        code = 0
    except CommandError as error:
        code = error.returncode
    return code, json.loads(out.getvalue())["sources"][0]


def record_ids(period: datetime) -> list[int]:
    records = CostRecord.objects.filter(billing_period_start=period)
    return sorted(records.values_list("pk", flat=True))


def stored_billed(period: datetime) -> Decimal:
    records = CostRecord.objects.filter(billing_period_start=period)
    return sum(records.values_list("billed_cost", flat=True), Decimal(0))


NOV, DEC = datetime(2023, 11, 1, tzinfo=UTC), datetime(2023, 12, 1, tzinfo=UTC)


def test_a_sync_loads_every_period_from_all_the_files_its_manifest_lists(
    source, export, request_log
):
    export.deliver("2023-11", NOVEMBER[:700], NOVEMBER[700:])
    export.deliver("2023-12", DECEMBER)

    code, result = sync_json()

    assert code == 0, result
    assert result["status"] == "imported"
    assert result["billing_periods"] == ["2023-11", "2023-12"]
    assert result["rows"] == 1281 + 40 == CostRecord.objects.count()
    total = billed(NOVEMBER) + billed(DECEMBER)
    assert result["billed"] == {"USD": str(total)}
    assert stored_billed(NOV) == billed(NOVEMBER) == Decimal("1.6823086974")
    assert stored_billed(DEC) == billed(DECEMBER)
    assert sorted(request_log.downloads()) == [
        f"{DATA}/BILLING_PERIOD=2023-11/{EXPORT}-00001.csv.gz",
        f"{DATA}/BILLING_PERIOD=2023-11/{EXPORT}-00002.csv.gz",
        f"{DATA}/BILLING_PERIOD=2023-12/{EXPORT}-00001.csv.gz",
    ]


def test_a_second_sync_with_nothing_changed_downloads_nothing_and_is_unchanged(
    source, export, request_log
):
    export.deliver("2023-11", NOVEMBER[:700], NOVEMBER[700:])
    export.deliver("2023-12", DECEMBER)
    sync_json()
    loaded = record_ids(NOV) + record_ids(DEC)
    request_log.clear()

    code, result = sync_json()

    assert (code, result["status"]) == (0, "unchanged")
    assert request_log.downloads() == []
    assert record_ids(NOV) + record_ids(DEC) == loaded


def test_a_rewritten_data_file_reloads_its_whole_period_and_nothing_else(
    source, export, request_log
):
    export.deliver("2023-11", NOVEMBER[:700], NOVEMBER[700:])
    export.deliver("2023-12", DECEMBER)
    sync_json()
    december = record_ids(DEC)
    request_log.clear()
    restated = [row | {"line_item_unblended_cost": "0.5"} for row in NOVEMBER[700:]]

    export.deliver("2023-11", NOVEMBER[:700], restated)
    code, result = sync_json()

    assert (code, result["status"]) == (0, "imported")
    assert result["billing_periods"] == ["2023-11"]
    assert (
        result["rows"]
        == 1281
        == CostRecord.objects.filter(billing_period_start=NOV).count()
    )
    assert stored_billed(NOV) == billed(NOVEMBER[:700]) + billed(restated)
    # Both files of the period, since the period is replaced as a whole.
    assert sorted(request_log.downloads()) == [
        f"{DATA}/BILLING_PERIOD=2023-11/{EXPORT}-00001.csv.gz",
        f"{DATA}/BILLING_PERIOD=2023-11/{EXPORT}-00002.csv.gz",
    ]
    assert record_ids(DEC) == december


def test_a_period_whose_manifest_disappeared_keeps_what_was_loaded(
    source, export, request_log
):
    export.deliver("2023-11", NOVEMBER)
    export.deliver("2023-12", DECEMBER)
    sync_json()
    november = record_ids(NOV)
    export.delete_manifest("2023-11")
    export.deliver("2023-12", DECEMBER[:10])

    code, result = sync_json()

    assert (code, result["billing_periods"]) == (0, ["2023-12"])
    assert record_ids(NOV) == november
    assert stored_billed(DEC) == billed(DECEMBER[:10])


def test_a_manifest_that_lists_no_files_empties_its_period(source, export):
    export.deliver("2023-11", NOVEMBER)
    export.deliver("2023-12", DECEMBER)
    sync_json()

    export.deliver("2023-12")
    code, result = sync_json()

    assert (code, result["billing_periods"], result["rows"]) == (0, ["2023-12"], 0)
    assert record_ids(DEC) == []
    assert CostRecord.objects.filter(billing_period_start=NOV).count() == 1281


def test_rows_changed_by_a_file_import_are_loaded_again_from_the_bucket(
    source, export, request_log, tmp_path
):
    export.deliver("2023-11", NOVEMBER)
    export.deliver("2023-12", DECEMBER)
    sync_json()
    partial = tmp_path / "november.csv.gz"
    partial.write_bytes(gzip_csv(NOVEMBER[:5]))
    call_command(
        "billing_import", str(partial), source="AWS payer", stdout=io.StringIO()
    )
    request_log.clear()

    code, result = sync_json()

    assert (code, result["billing_periods"]) == (0, ["2023-11"])
    assert stored_billed(NOV) == billed(NOVEMBER)
    assert request_log.downloads() == [
        f"{DATA}/BILLING_PERIOD=2023-11/{EXPORT}-00001.csv.gz"
    ]


def test_a_legacy_cur_is_read_from_its_date_range_manifest(source, s3, request_log):
    folder = "cur/legacy/20231101-20231201"
    key = f"{folder}/assembly-1/legacy-00001.csv.gz"
    s3.put_object(Bucket=BUCKET, Key=key, Body=gzip.compress(LEGACY_CUR.read_bytes()))
    manifest = {"assemblyId": "assembly-1", "bucket": BUCKET, "reportKeys": [key]}
    s3.put_object(
        Bucket=BUCKET,
        Key=f"{folder}/legacy-Manifest.json",
        Body=json.dumps(manifest).encode(),
    )
    source.config = source.config | {"export": "", "report": "legacy"}
    source.save()

    code, result = sync_json()

    assert (code, result["billing_periods"]) == (0, ["2023-11"])
    assert result["billed"] == {
        "USD": str(billed(legacy_rows(), "lineItem/UnblendedCost"))
    }
    assert request_log.downloads() == [key]


def test_no_manifest_in_the_window_fails_naming_where_it_looked(source, export):
    code, result = sync_json()

    assert code == 1
    assert f"s3://{BUCKET}/{METADATA}/BILLING_PERIOD=2023-11/" in result["error"]
    assert f"no {EXPORT}-Manifest.json" in result["error"]


def test_a_wrong_bucket_fails_naming_it_and_keeps_the_data(source, export):
    export.deliver("2023-11", NOVEMBER)
    export.deliver("2023-12", DECEMBER)
    sync_json()
    source.config = source.config | {"bucket": "acme-billing-typo"}
    source.save()

    code, result = sync_json()

    assert code == 1
    assert "the bucket acme-billing-typo does not exist" in result["error"]
    assert SECRET not in result["error"]
    assert CostRecord.objects.count() == 1281 + 40
    source.refresh_from_db()
    assert "acme-billing-typo" in source.last_error


def test_a_data_file_that_is_not_a_cur_fails_naming_its_s3_uri(source, export, s3):
    export.deliver("2023-11", NOVEMBER)
    export.deliver("2023-12", [{"date": "2023-12-01", "cost": "1.00"}])

    code, result = sync_json()

    assert code == 1
    uri = f"s3://{BUCKET}/{DATA}/BILLING_PERIOD=2023-12/{EXPORT}-00001.csv.gz"
    assert result["error"].startswith(f"{uri}: is not an AWS Cost and Usage Report")
    assert CostRecord.objects.count() == 0

    # The failed sync recorded nothing as loaded: November loads with December.
    export.deliver("2023-12", DECEMBER)
    code, result = sync_json()
    assert (code, result["billing_periods"]) == (0, ["2023-11", "2023-12"])
    assert CostRecord.objects.count() == 1281 + 40


def test_an_export_that_creates_a_new_report_each_refresh_is_read_from_the_newest(
    source, s3, request_log
):
    partition = "BILLING_PERIOD=2023-11"
    for hour, execution, rows in (
        (1, "b-first", NOVEMBER[:5]),
        (2, "a-next", NOVEMBER),
    ):
        with time_machine.travel(datetime(2023, 12, 15, hour, tzinfo=UTC)):
            key = f"{DATA}/{partition}/{execution}/{EXPORT}-00001.csv.gz"
            s3.put_object(Bucket=BUCKET, Key=key, Body=gzip_csv(rows))
            manifest = {"executionId": execution, "dataFiles": [f"s3://{BUCKET}/{key}"]}
            s3.put_object(
                Bucket=BUCKET,
                Key=f"{METADATA}/{partition}/{execution}/{EXPORT}-Manifest.json",
                Body=json.dumps(manifest).encode(),
            )

    code, result = sync_json()

    assert (code, result["rows"]) == (0, 1281)
    assert request_log.downloads() == [
        f"{DATA}/{partition}/a-next/{EXPORT}-00001.csv.gz"
    ]


@contextmanager
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that nothing listens on while the block runs: bound, so no
    other test takes it, but never listening."""
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        yield bound.getsockname()[1]


def test_an_unreachable_endpoint_is_a_provider_error_to_retry_later(
    source, monkeypatch, settings
):
    monkeypatch.setattr(aws_s3, "RETRY_ATTEMPTS", 1)
    with closed_port() as port:
        source.config = source.config | {"endpoint_url": f"http://127.0.0.1:{port}"}
        settings.SOURCE_ENDPOINT_ALLOWLIST = [source.config["endpoint_url"]]
        source.save()
        with pytest.raises(ProviderError, match="S3 could not be reached"):
            billing_sync_source(source_id=source.pk)
    source.refresh_from_db()
    assert "could not be reached" in source.last_error


class SlowDownHandler(BaseHTTPRequestHandler):
    """S3 when it throttles: 503 SlowDown to every request."""

    def do_GET(self) -> None:
        body = (
            b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown</Code>"
            b"<Message>Please reduce your request rate.</Message></Error>"
        )
        self.send_response(503)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


def test_throttling_is_a_provider_error_to_retry_later(source, monkeypatch, settings):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setattr(aws_s3, "RETRY_ATTEMPTS", 1)
    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowDownHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        source.config = source.config | {
            "endpoint_url": f"http://127.0.0.1:{server.server_port}"
        }
        settings.SOURCE_ENDPOINT_ALLOWLIST = [source.config["endpoint_url"]]
        source.save()
        with pytest.raises(ProviderError, match="SlowDown") as raised:
            billing_sync_source(source_id=source.pk)
    finally:
        server.shutdown()
        server.server_close()
    assert SECRET not in str(raised.value)
    assert "Please reduce" not in str(raised.value)  # S3's own words: logs only
