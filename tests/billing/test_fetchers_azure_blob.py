"""The Azure Blob Storage fetcher against a real local Azurite (tests/billing/
azurite.py), to which the tests deliver Cost Management exports as Azure does: each
run's data files, then the manifest.json that lists them, under
<root>/<export>/<date range>/<run>/.

The exports are the real EA samples (actual cost, Sept 2023) and the reservation
delivery made from them (tests/data/azure/README.md)."""

import gzip
import io
import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import time_machine
from azure.storage.blob import (
    BlobServiceClient,
    ContainerSasPermissions,
    generate_container_sas,
)
from django.core.management import call_command
from django.core.management.base import CommandError

from billing.importers import azure_blob
from billing.importers.azure_blob import AzureBlobExportFetcher
from billing.importers.base import ProviderError
from billing.models import BillingSource, CostRecord
from billing.services import billing_sync_source
from tests.billing.azurite import ACCOUNT, KEY, azurite_blob
from tests.billing.importing import as_decimals, column_sums, read_csv
from tests.data import DATA, SAMPLES

pytestmark = pytest.mark.django_db

EA_ACTUAL = (
    SAMPLES / "native-azure-cost-details" / "finops-toolkit__EA_ActualCost_Small.csv"
)
RESERVATION_ACTUAL = DATA / "azure" / "ea_reservation_export_1.csv"
RESERVATION_AMORTIZED = DATA / "azure" / "ea_reservation_export_2.csv"
NOW = datetime(2023, 10, 10, 12, tzinfo=UTC)  # the window: September and October
SEPTEMBER = datetime(2023, 9, 1, tzinfo=UTC)
ROOT = "billing"
WRONG_KEY = "d3JvbmcgYnV0IHdlbGwgZm9ybWVkIGtleSBmb3IgdGhlIHRlc3Rz" + "A" * 36 + "=="


@pytest.fixture(scope="module")
def account_url(tmp_path_factory) -> Iterator[str]:
    with azurite_blob(tmp_path_factory.mktemp("azurite")) as url:
        yield url


@pytest.fixture(autouse=True)
def now() -> Iterator[None]:
    with time_machine.travel(NOW):
        yield


@pytest.fixture
def container(account_url, monkeypatch, settings) -> Any:
    """A container of its own for each test, on an Azurite its sources may use by
    the allowlist."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    settings.SOURCE_ENDPOINT_ALLOWLIST = [account_url]
    service = BlobServiceClient(
        account_url, credential={"account_name": ACCOUNT, "account_key": KEY}
    )
    return service.create_container(f"exports-{uuid4().hex[:12]}")


def azure_source(account_url: str, container: Any, *exports: str) -> BillingSource:
    source = BillingSource(
        name="Azure EA",
        kind="azure",
        config={
            "account_url": account_url,
            "container": container.container_name,
            "root": ROOT,
            "exports": list(exports),
        },
    )
    source.credentials = {"account_key": KEY}
    source.save()
    return source


@dataclass
class Export:
    """Runs one Cost Management export of September 2023 into the container."""

    container: Any
    name: str
    dataset: str
    runs: int = 0

    def run(self, *parts: bytes) -> list[str]:
        self.runs += 1
        folder = f"{ROOT}/{self.name}/20230901-20230930/{self.runs:04}-{uuid4()}"
        names = []
        for number, content in enumerate(parts):
            name = f"{folder}/part_{number}_0001.csv"
            self.container.upload_blob(name, content)
            names.append(name)
        manifest = {
            "blobCount": len(names),
            "exportConfig": {
                "exportName": self.name,
                "resourceId": "/providers/Microsoft.Billing/billingAccounts/8611537"
                f"/providers/Microsoft.CostManagement/exports/{self.name}",
                "dataVersion": "2023-12-01-preview",
                "apiVersion": "2023-07-01-preview",
                "type": self.dataset,
                "timeFrame": "MonthToDate",
                "granularity": "Daily",
            },
            "deliveryConfig": {
                "partitionData": True,
                "dataOverwriteBehavior": "CreateNewReport",
                "fileFormat": "Csv",
                "rootFolderPath": ROOT,
            },
            "runInfo": {
                "executionType": "Scheduled",
                "runId": str(uuid4()),
                "startDate": "2023-09-01T00:00:00",
                "endDate": "2023-09-30T00:00:00",
            },
            "blobs": [
                {"blobName": name, "byteCount": len(content)}
                for name, content in zip(names, parts, strict=True)
            ],
        }
        self.container.upload_blob(
            f"{folder}/manifest.json", json.dumps(manifest).encode()
        )
        return names


def split_csv(path: Path, at: int) -> tuple[bytes, bytes]:
    """The file in two parts as a partitioned export writes them, each with the
    header; the second gzipped, as an export with compression is."""
    header, *lines = path.read_bytes().removeprefix(b"\xef\xbb\xbf").splitlines(True)
    return b"".join([header, *lines[:at]]), gzip.compress(
        b"".join([header, *lines[at:]])
    )


def sync_json(name: str = "Azure EA") -> tuple[int, dict]:
    out = io.StringIO()
    try:
        call_command("billing_sync", "--source", name, json=True, stdout=out)
        code = 0
    except CommandError as error:
        code = error.returncode
    return code, json.loads(out.getvalue())["sources"][0]


def file_cost(path: Path) -> Decimal:
    """A file's own total of its cost column, parsed independently of the importer."""
    return column_sums(read_csv(path), "Cost", "BillingCurrency")["USD"]


def record_ids() -> list[int]:
    return sorted(CostRecord.objects.values_list("pk", flat=True))


def credentials(kind: str, account_url: str, container: Any) -> dict[str, str]:
    if kind == "sas_token":
        token = generate_container_sas(
            ACCOUNT,
            container.container_name,
            account_key=KEY,
            permission=ContainerSasPermissions(read=True, list=True),
            # Azurite checks it against its own clock, which time_machine leaves.
            expiry=datetime(2099, 1, 1, tzinfo=UTC),
        )
        return {"sas_token": token}
    if kind == "connection_string":
        return {
            "connection_string": f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};"
            f"AccountKey={KEY};BlobEndpoint={account_url};"
        }
    return {"account_key": KEY}


@pytest.mark.parametrize("kind", ["account_key", "sas_token", "connection_string"])
def test_a_partitioned_export_loads_every_file_its_manifest_lists(
    account_url, container, kind
):
    source = azure_source(account_url, container, "ea-actual")
    source.credentials = credentials(kind, account_url, container)
    source.save()
    Export(container, "ea-actual", "ActualCost").run(*split_csv(EA_ACTUAL, 6))

    code, result = sync_json()

    assert code == 0, result
    assert result["status"] == "imported"
    assert result["billing_periods"] == ["2023-09"]
    assert result["rows"] == len(read_csv(EA_ACTUAL)) == CostRecord.objects.count()
    assert as_decimals(result["billed"]) == column_sums(
        read_csv(EA_ACTUAL), "Cost", "BillingCurrency"
    )
    # The actual cost export alone: its reservation purchase is not effective cost.
    assert ["effective cost leaves out" in text for text in result["warnings"]] == [
        True
    ]


def test_actual_and_amortised_exports_of_a_month_load_as_one_delivery(
    account_url, container
):
    azure_source(account_url, container, "ea-actual", "ea-amortized")
    Export(container, "ea-actual", "ActualCost").run(RESERVATION_ACTUAL.read_bytes())
    Export(container, "ea-amortized", "AmortizedCost").run(
        RESERVATION_AMORTIZED.read_bytes()
    )

    code, result = sync_json()

    assert (code, result["status"], result["warnings"]) == (0, "imported", [])
    assert Decimal(result["billed"]["USD"]) == file_cost(RESERVATION_ACTUAL)
    assert Decimal(result["effective"]["USD"]) == file_cost(RESERVATION_AMORTIZED)
    purchase = CostRecord.objects.get(charge_category="Purchase")
    assert (purchase.billed_cost, purchase.effective_cost) == (Decimal("22.19184"), 0)
    assert CostRecord.objects.filter(resource_name="umq-umqoi3-db").count() == 1


def test_a_month_whose_files_are_unchanged_is_skipped_and_keeps_its_rows(
    account_url, container
):
    source = azure_source(account_url, container, "ea-actual")
    Export(container, "ea-actual", "ActualCost").run(*split_csv(EA_ACTUAL, 6))
    sync_json()
    loaded = record_ids()

    code, result = sync_json()

    assert (code, result["status"]) == (0, "unchanged")
    assert record_ids() == loaded
    source.refresh_from_db()
    fetcher = AzureBlobExportFetcher()
    rows = fetcher.fetch(source=source, since=SEPTEMBER)
    assert (fetcher.covered_periods, list(rows)) == (set(), [])


def test_a_new_export_run_reloads_its_month_from_the_newest_manifest(
    account_url, container
):
    azure_source(account_url, container, "ea-actual")
    export = Export(container, "ea-actual", "ActualCost")
    export.run(*split_csv(EA_ACTUAL, 6))
    sync_json()

    export.run(RESERVATION_ACTUAL.read_bytes())
    code, result = sync_json()

    assert (code, result["status"], result["billing_periods"]) == (
        0,
        "imported",
        ["2023-09"],
    )
    assert Decimal(result["billed"]["USD"]) == file_cost(RESERVATION_ACTUAL)
    assert CostRecord.objects.count() == len(read_csv(RESERVATION_ACTUAL))


def test_a_wrong_key_is_refused_with_a_clear_message_and_keeps_the_data(
    account_url, container
):
    source = azure_source(account_url, container, "ea-actual")
    Export(container, "ea-actual", "ActualCost").run(*split_csv(EA_ACTUAL, 6))
    sync_json()
    loaded = record_ids()
    source.credentials = {"account_key": WRONG_KEY}
    source.save()

    code, result = sync_json()

    assert code == 1
    where = f"{account_url}/{container.container_name}/{ROOT}/ea-actual/20230901-"
    assert result["error"].startswith(f"{where}: access was refused (")
    assert "check the source's credentials" in result["error"]
    assert WRONG_KEY not in result["error"] and KEY not in result["error"]
    assert record_ids() == loaded


def test_a_missing_container_fails_naming_it(account_url, container):
    source = azure_source(account_url, container, "ea-actual")
    source.config = source.config | {"container": "cost-exprots"}
    source.save()

    code, result = sync_json()

    assert code == 1
    assert "the container cost-exprots does not exist" in result["error"]
    assert f"{account_url}/cost-exprots/{ROOT}/ea-actual/" in result["error"]


def test_no_manifest_in_the_window_fails_naming_where_it_looked(account_url, container):
    azure_source(account_url, container, "ea-actual")

    code, result = sync_json()

    assert code == 1
    assert f"under {ROOT}/ea-actual/20230901-*/manifest.json" in result["error"]


@contextmanager
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that nothing listens on while the block runs."""
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        yield bound.getsockname()[1]


def test_an_unreachable_account_is_a_provider_error_to_retry_later(
    account_url, container, monkeypatch, settings
):
    monkeypatch.setattr(azure_blob, "RETRY_ATTEMPTS", 0)
    source = azure_source(account_url, container, "ea-actual")
    with closed_port() as port:
        source.config = source.config | {
            "account_url": f"http://127.0.0.1:{port}/{ACCOUNT}"
        }
        settings.SOURCE_ENDPOINT_ALLOWLIST = [f"http://127.0.0.1:{port}"]
        source.save()
        with pytest.raises(ProviderError, match="could not be reached"):
            billing_sync_source(source_id=source.pk)
    source.refresh_from_db()
    assert "could not be reached" in source.last_error
    assert KEY not in source.last_error
