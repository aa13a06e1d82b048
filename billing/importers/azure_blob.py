"""Azure Cost Management exports read from the Blob Storage container that Azure writes
them to.

An `azure` source names its exports in `config`, as set up in Cost Management
(Exports): {"account_url": "https://acme.blob.core.windows.net", "container":
"cost-exports", "root": "billing", "exports": ["acme-actual", "acme-amortized"]}.
"root" is the export's directory in the container (empty for none), "exports" the
export names: one FOCUS export (FocusCost), or a cost details export of actual cost,
of amortised cost, or both. Its credentials are one of {"account_key": ...},
{"sas_token": ...} (read and list on the container) or {"connection_string": ...}
(which names the account, so "account_url" may be left out). The endpoint, whichever
names it, is a Blob Storage host over https or one in SOURCE_ENDPOINT_ALLOWLIST
(billing/endpoints.py). Without a container in
its config, an `azure` source is one whose files people import.

Each run of an export writes its files, then a `manifest.json` that lists them, under
`<root>/<export>/<YYYYMMDD-YYYYMMDD>/...` (the first and last day of the month it
covers; shared/reference/billing-formats.md, 5). The manifest's `blobs` are the data
files (names in the container) and its `exportConfig.type` the dataset: FocusCost,
ActualCost (or Usage, its older name) or AmortizedCost. The newest manifest of each
export in a month's folder is that month's delivery from the export; the month's
delivery is the files of all of them:

- FOCUS files are read by FocusImporter.
- Cost details files are read together by AzureCostDetailsImporter.rows_of_delivery:
  with both datasets each cost counts once, billed cost from the actual one and
  effective cost from the amortised one; a month of one dataset alone loads with the
  warning that names what it cannot give (`warnings`). Each file is saved under a
  name that says its dataset, which that importer reads for a file whose rows
  cannot tell it.
- A month with FOCUS and cost details files is refused: they would count twice.

As with the S3 exports (aws_s3), a month whose files (names and ETags) are those the
last sync loaded, and that no file import restated since, is skipped and keeps its
rows; a month without a manifest keeps what was loaded; no manifest in the whole
window is a failure that names where the sync looked. What a sync loads is kept in
`config["seen_etags"]` by `remember`, in the import's transaction. Downloads ask for
the ETag listed, and a month's files are deleted once read.

Throttling (429, ServerBusy), 5xx answers and the network raise ProviderError (the
task retries later), and so does a blob that vanishes or changes while it is read (an
export run under way). Refused access, a missing container or a bad configuration
raise ImportFailure naming the container and blob. No message repeats a credential.
"""

import hashlib
import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from django.db.models import Max
from django.utils import timezone

from billing.importers.azure import AzureCostDetailsImporter
from billing.importers.base import ImportFailure, ProviderError
from billing.importers.focus import FocusImporter
from billing.importers.http import config_text, endpoint_allowed
from billing.importers.synced_periods import (
    SEEN_KEY,
    common_folder,
    months_since,
    remember_seen,
    still_loaded,
)
from billing.models import BillingSource

MANIFESTS = ("/manifest.json", "/_manifest.json")  # older partitioned exports: _
# Cost Management's dataset names, as manifests and the saved files' names give them.
FOCUS, ACTUAL, AMORTIZED = "FocusCost", "ActualCost", "AmortizedCost"
DATASETS = {
    "focuscost": FOCUS,
    "actualcost": ACTUAL,
    "usage": ACTUAL,
    "amortizedcost": AMORTIZED,
}
# The SDK retries throttling, 5xx and broken connections with backoff; the fetch
# then gives up, and the task retries later.
RETRY_ATTEMPTS = 3
TIMEOUTS = {"connection_timeout": 10, "read_timeout": 120}  # seconds
TRANSIENT_CODES = frozenset({"ServerBusy", "OperationTimedOut", "InternalError"})


@dataclass(frozen=True)
class Blob:
    name: str
    etag: str
    dataset: str = ""


@dataclass(frozen=True)
class Exports:
    """Where one source's exports land."""

    container: str
    root: str
    names: tuple[str, ...]

    @classmethod
    def of(cls, source: BillingSource) -> "Exports":
        container = config_text(source, "container")
        names = (source.config or {}).get("exports") or []
        if isinstance(names, str):
            names = [names]
        if (
            not container
            or not names
            or not all(isinstance(name, str) and name.strip("/") for name in names)
        ):
            raise ImportFailure(
                f"{source.name}: config needs a container and the export names, e.g. "
                '{"account_url": "https://acme.blob.core.windows.net", "container": '
                '"cost-exports", "root": "billing", "exports": ["acme-actual", '
                '"acme-amortized"]}'
            )
        root = config_text(source, "root").strip("/")
        return cls(container, root, tuple(name.strip("/") for name in names))

    def month_folder(self, export: str, month: datetime) -> str:
        """The prefix of the folders of the runs that export this month."""
        base = f"{self.root}/{export}" if self.root else export
        return f"{base}/{month:%Y%m%d}-"


class AzureBlobExportFetcher:
    kind = "azure"

    def __init__(self) -> None:
        # Set when fetch() returns: the periods its rows restate in full, and what
        # `remember` records of them. `warnings` fills as the rows are read.
        self.covered_periods: set[datetime] = set()
        self.seen: dict[str, dict] = {}
        self.warnings: list[str] = []

    @staticmethod
    def syncs(source: BillingSource) -> bool:
        """An azure source without a container is one whose files people import."""
        return bool((source.config or {}).get("container"))

    def fetch(self, *, source: BillingSource, since: datetime) -> Iterator[dict]:
        """Decides what to load before it returns, and downloads as the rows are
        read. Writes nothing: see `remember`."""
        exports, container = Exports.of(source), Container(source)
        months = months_since(since=since, now=timezone.now())
        deliveries = {month: container.delivery(exports, month) for month in months}
        if not any(deliveries.values()):
            raise _no_manifest(source, exports, months)
        seen = (source.config or {}).get(SEEN_KEY) or {}
        # billing_sync_source creates the sync's run just before it fetches.
        this_run = source.import_runs.aggregate(last=Max("pk"))["last"] or 0
        self.covered_periods.clear()
        self.seen, to_load = {}, []
        for month, blobs in deliveries.items():
            if blobs is None:
                continue
            period, digest = f"{month:%Y-%m}", _digest(blobs)
            if still_loaded(source, period, seen.get(period), digest):
                self.seen[period] = seen[period]
                continue
            self.covered_periods.add(month)
            to_load.append(blobs)
            self.seen[period] = {"files": digest, "run": this_run}
        return self._rows(container, to_load)

    def remember(self, source: BillingSource) -> None:
        """Record what this sync loads; called in the import's transaction."""
        remember_seen(source, self.seen)

    def _rows(
        self, container: "Container", deliveries: list[list[Blob]]
    ) -> Iterator[dict]:
        self.warnings = []
        for blobs in deliveries:
            with tempfile.TemporaryDirectory(prefix="spendtracker-azure-") as folder:
                saved = {_local_name(n, blob): blob for n, blob in enumerate(blobs)}
                paths = [
                    container.download(blob, Path(folder) / name)
                    for name, blob in saved.items()
                ]
                try:
                    yield from self._delivery_rows(
                        paths, focus=blobs[0].dataset == FOCUS
                    )
                except ImportFailure as failure:
                    blob = saved.get(failure.file)
                    raise ImportFailure(
                        failure.message,
                        file=container.url(blob.name) if blob else failure.file,
                        row=failure.row,
                        column=failure.column,
                    ) from None

    def _delivery_rows(self, paths: list[Path], *, focus: bool) -> Iterator[dict]:
        if focus:
            importer = FocusImporter()
            for path in paths:
                yield from importer.rows(path)
            return
        details = AzureCostDetailsImporter()
        yield from details.rows_of_delivery(paths)
        self.warnings += details.warnings


def _local_name(number: int, blob: Blob) -> str:
    """The blob's file name, after its dataset, as AzureCostDetailsImporter reads it."""
    return f"{number:04}-{blob.dataset}-{PurePosixPath(blob.name).name}"


class Container:
    """The Blob Storage calls of one sync, each turning what Azure says into the
    errors above."""

    def __init__(self, source: BillingSource) -> None:
        self.name = config_text(source, "container")
        self.secrets = _secrets(source.credentials)
        self.client = blob_service(source).get_container_client(self.name)
        endpoint = urlsplit(self.client.primary_endpoint)
        self.endpoint = f"{endpoint.scheme}://{endpoint.netloc}{endpoint.path}"

    def url(self, name: str = "") -> str:
        """Where a blob is, to name it in a message (never with a SAS token)."""
        return f"{self.endpoint}/{name}" if name else self.endpoint

    def delivery(self, exports: Exports, month: datetime) -> list[Blob] | None:
        """The month's files from the newest manifest of each export, or None when no
        export has one. A month of FOCUS and cost details files is refused."""
        manifests = [
            manifest
            for export in exports.names
            if (manifest := self._newest_manifest(exports.month_folder(export, month)))
        ]
        if not manifests:
            return None
        blobs = [blob for manifest in manifests for blob in self._data_files(manifest)]
        if len({blob.dataset == FOCUS for blob in blobs}) > 1:
            raise ImportFailure(
                f"{self.url()}: the exports {', '.join(exports.names)} deliver "
                f"{month:%Y-%m} as FOCUS and as cost details, which would count "
                "every cost twice: name either the FOCUS export or the cost details "
                "ones"
            )
        return blobs

    def _newest_manifest(self, prefix: str) -> Blob | None:
        found = [
            (item.last_modified, item.name, item.etag)
            for item in self._listing(prefix)
            if item.name.endswith(MANIFESTS)
        ]
        if not found:
            return None
        _, name, etag = max(found)
        return Blob(name, etag)

    def _data_files(self, manifest: Blob) -> list[Blob]:
        """The manifest's data files with their current ETags, listed in one go."""
        content = self._read(manifest)
        dataset, names = _manifest_files(content, self.url(manifest.name))
        folder = common_folder(names)
        etags = {item.name: item.etag for item in self._listing(folder)}
        missing = [name for name in names if name not in etags]
        if missing:
            raise ProviderError(
                f"{self.url(manifest.name)} lists {self.url(missing[0])}, which is "
                "not in the container (yet): an export run may be under way"
            )
        return [Blob(name, etags[name], dataset) for name in names]

    def download(self, blob: Blob, path: Path) -> Path:
        with self._errors(blob.name), path.open("wb") as out:
            stream = self.client.download_blob(
                blob.name, etag=blob.etag, match_condition=MatchConditions.IfNotModified
            )
            for chunk in stream.chunks():
                out.write(chunk)
        return path

    def _read(self, blob: Blob) -> bytes:
        with self._errors(blob.name):
            stream = self.client.download_blob(
                blob.name, etag=blob.etag, match_condition=MatchConditions.IfNotModified
            )
            return stream.readall()

    def _listing(self, prefix: str) -> Iterator[Any]:
        with self._errors(prefix):
            yield from self.client.list_blobs(name_starts_with=prefix)

    @contextmanager
    def _errors(self, name: str) -> Iterator[None]:
        where = self.url(name)
        try:
            yield
        except ResourceModifiedError:
            raise ProviderError(
                f"{where}: changed while it was read: an export run may be under way"
            ) from None
        except ResourceNotFoundError as exc:
            if _error_code(exc) == "ContainerNotFound":
                raise ImportFailure(
                    f"{where}: the container {self.name} does not exist"
                ) from None
            raise ProviderError(
                f"{where}: is gone since it was listed: an export run may be under way"
            ) from None
        except HttpResponseError as exc:
            raise self._refusal(exc, where) from None
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise ProviderError(
                self._redact(f"{where}: Blob Storage could not be reached: {exc}")
            ) from None
        except AzureError as exc:
            raise ImportFailure(self._redact(f"{where}: {exc}")) from None

    def _refusal(self, exc: HttpResponseError, where: str) -> Exception:
        code, status = _error_code(exc), exc.status_code or 0
        if code in TRANSIENT_CODES or status == 429 or status >= 500:
            return ProviderError(f"{where}: Blob Storage answered {code or status}")
        if status in (401, 403):
            return ImportFailure(
                f"{where}: access was refused ({code or status}); check the "
                "source's credentials (account key, SAS token with read and list on "
                "the container, or connection string)"
            )
        return ImportFailure(
            f"{where}: Blob Storage refused the request ({code or status})"
        )

    def _redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "[a credential]")
        return text


def blob_service(source: BillingSource) -> Any:
    """The one way out to Blob Storage (the SDK is imported in the functions that
    build it: it adds to every process start, and only a sync needs it)."""
    # A redirect would carry the credential to wherever it points: not followed.
    options: dict[str, Any] = {
        "retry_total": RETRY_ATTEMPTS,
        "permit_redirects": False,
        **TIMEOUTS,
    }
    credentials = source.credentials
    kinds = ("account_key", "sas_token", "connection_string")
    given = [name for name in kinds if credentials.get(name)]
    if len(given) != 1 or not isinstance(credentials[given[0]], str):
        raise ImportFailure(
            f"{source.name}: credentials need one of account_key, sas_token or "
            "connection_string"
        )
    secret = credentials[given[0]]
    client = (
        _connection_string_client(source, secret, options)
        if given == ["connection_string"]
        else _account_url_client(source, given[0], secret, options)
    )
    # Checked on the client built, since a connection string names its own endpoint.
    endpoint_allowed(source, client.url)
    return client


def _connection_string_client(
    source: BillingSource, secret: str, options: dict[str, Any]
) -> Any:
    from azure.storage.blob import BlobServiceClient

    try:
        return BlobServiceClient.from_connection_string(secret, **options)
    except ValueError:
        raise ImportFailure(
            f"{source.name}: the connection string is not one Azure gives "
            "(AccountName=...;AccountKey=...;...)"
        ) from None


def _account_url_client(
    source: BillingSource, given: str, secret: str, options: dict[str, Any]
) -> Any:
    from azure.storage.blob import BlobServiceClient

    account_url = config_text(source, "account_url")
    if not account_url.startswith(("https://", "http://")):
        raise ImportFailure(
            f"{source.name}: config needs the account_url of the storage account, "
            'e.g. "https://acme.blob.core.windows.net"'
        )
    if given == "sas_token":
        return BlobServiceClient(account_url, credential=secret, **options)
    account = BlobServiceClient(account_url).account_name
    key: dict[str, Any] = {"account_name": account, "account_key": secret}
    return BlobServiceClient(account_url, credential=key, **options)


def _error_code(exc: HttpResponseError) -> str:
    """Azure's error code ("ContainerNotFound"), which the SDK sets on its errors."""
    return str(getattr(exc, "error_code", None) or "")


def _secrets(credentials: dict) -> list[str]:
    """Every credential text, and the keys a connection string carries."""
    secrets = [str(value) for value in credentials.values() if value]
    for part in str(credentials.get("connection_string", "")).split(";"):
        name, _, value = part.partition("=")
        if name.strip().lower() in {"accountkey", "sharedaccesssignature"} and value:
            secrets.append(value)
    return sorted(secrets, key=len, reverse=True)


def _manifest_files(content: bytes, where: str) -> tuple[str, list[str]]:
    """The dataset a manifest delivers and the names of its data files."""
    try:
        manifest = json.loads(content)
        kind = str(manifest["exportConfig"]["type"])
        entries = manifest["blobs"]
        names = [entry["blobName"] for entry in entries]
    except (ValueError, KeyError, TypeError):
        raise ImportFailure(
            "is not a Cost Management export manifest: no exportConfig.type and "
            "blobs[].blobName",
            file=where,
        ) from None
    if not all(isinstance(name, str) and name for name in names):
        raise ImportFailure("blobs[].blobName is not a list of names", file=where)
    dataset = DATASETS.get(kind.lower())
    if dataset is None:
        raise ImportFailure(
            f"is a {kind[:40]} export: Spendtracker reads FocusCost, ActualCost and "
            "AmortizedCost exports",
            file=where,
        )
    return dataset, [name.lstrip("/") for name in names]


def _digest(blobs: list[Blob]) -> str:
    listing = sorted(f"{blob.name} {blob.etag}" for blob in blobs)
    return hashlib.sha256("\n".join(listing).encode()).hexdigest()


def _no_manifest(
    source: BillingSource, exports: Exports, months: list[datetime]
) -> ImportFailure:
    where = ", ".join(
        exports.month_folder(export, month) + "*/manifest.json"
        for month in months
        for export in exports.names
    )
    return ImportFailure(
        f"{source.name}: no export manifest in the container {exports.container} "
        f"under {where}: check the container, root and export names, or wait for "
        "the export's first run"
    )
