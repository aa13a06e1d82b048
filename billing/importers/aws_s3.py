"""AWS Cost and Usage Reports read from the S3 bucket that AWS delivers them to.

An `aws-cur` source names the delivery in `config`, as set up in the Billing console:
{"bucket": "acme-billing", "prefix": "cur", "export": "spendtracker", "region":
"us-east-1"} for a Data Exports (CUR 2.0) export, or with "report" instead of "export"
for a legacy CUR. "endpoint_url" points at an S3-compatible store instead of AWS (one
listed in SOURCE_ENDPOINT_ALLOWLIST: billing/endpoints.py). Its credentials are
{"access_key_id": ..., "secret_access_key": ...} (and "session_token" for temporary
ones); without credentials, boto3's default chain is used (environment,
instance or task role). The key needs s3:ListBucket on the bucket and s3:GetObject on
the delivery's objects.

Each billing period's manifest is the list of its data files, written by AWS after
them (see shared/reference/billing-formats.md, 3.2):

- CUR 2.0: `<prefix>/<export>/metadata/BILLING_PERIOD=YYYY-MM/<export>-Manifest.json`,
  whose `dataFiles` are s3:// URIs. An export that creates a new report on each refresh
  writes each manifest into a folder of its own under that partition: the newest wins.
- Legacy CUR: `<prefix>/<report>/<yyyymmdd-yyyymmdd>/<report>-Manifest.json`, whose
  `reportKeys` are the keys of the latest assembly.

A manifest restates its whole period, so a period is loaded from all of its manifest's
files or not at all:

- A period whose data files (names and ETags) are those of the last sync that loaded
  it, and that no import restated since (a file imported into this source), is
  skipped: nothing is downloaded and it is not in `covered_periods`, so its rows stay
  as they are.
- A manifest that lists no files restates its period as empty.
- A period without a manifest keeps what was loaded. AWS states a period of no spend
  with a manifest; a missing one is a delivery not yet made (the first hours of a
  month), a lifecycle rule that expired old objects, or a changed prefix, and none of
  these means that the spend was zero. When no period of the window has a manifest,
  the sync fails and names where it looked: the configuration is wrong, or AWS has not
  delivered the export yet.

What each sync loaded, per period, is kept in `config["seen_etags"]`: a digest of the
data files' keys and ETags, and the import run that loaded them. `fetch` decides it,
and `remember` writes it, in the import's transaction (billing_sync_source fetches
before that transaction opens), so an import that fails or is rolled back records
nothing.

Files stream to a temporary file one at a time, are parsed by AwsCurImporter (CSV,
gzip CSV or Parquet, legacy or CUR 2.0 columns), and are deleted once read. A download
asks for the ETag it listed, so the rows loaded are those of the digest recorded.

Throttling, 5xx answers and the network raise ProviderError (the Celery task retries
later), and so does an object that vanishes while it is read (a refresh under way).
Refused access, a missing bucket or credentials raise ImportFailure naming the bucket
and key. No message repeats the secret key.
"""

import hashlib
import json
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
from dateutil.relativedelta import relativedelta
from django.db.models import Max
from django.utils import timezone

from billing.importers.aws_cur import AwsCurImporter
from billing.importers.base import ImportFailure, ProviderError
from billing.importers.http import config_text, endpoint_allowed
from billing.importers.synced_periods import (
    SEEN_KEY,
    common_folder,
    months_since,
    remember_seen,
    still_loaded,
)
from billing.models import BillingSource

MANIFEST_SUFFIX = "-Manifest.json"
DOWNLOAD_CHUNK = 1 << 20
# botocore's standard retry mode retries throttling, 5xx and broken connections with
# backoff; the fetch holds the source's row lock, so beyond that the task retries.
RETRY_ATTEMPTS = 3
TIMEOUTS = {"connect_timeout": 10, "read_timeout": 120}  # seconds
# Codes that pass on their own. Every object read was listed a moment before, so one
# that is gone or has another ETag is being rewritten by a refresh under way.
TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestTimeout",
        "InternalError",
        "ServiceUnavailable",
        "NoSuchKey",
        "PreconditionFailed",
    }
)
DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
    }
)


@dataclass(frozen=True)
class S3File:
    bucket: str
    key: str
    etag: str = ""

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True)
class Delivery:
    """Where one source's export lands, and how its manifests are laid out."""

    bucket: str
    base: str  # <prefix>/<export or report name>
    name: str
    legacy: bool

    @classmethod
    def of(cls, source: BillingSource) -> "Delivery":
        bucket = config_text(source, "bucket")
        export, report = config_text(source, "export"), config_text(source, "report")
        if not bucket or bool(export) == bool(report):
            raise ImportFailure(
                f"{source.name}: config needs a bucket and either export (a CUR 2.0 "
                "Data Export) or report (a legacy CUR), e.g. "
                '{"bucket": "acme-billing", "prefix": "cur", "export": "costs"}'
            )
        name = export or report
        prefix = config_text(source, "prefix").strip("/")
        base = f"{prefix}/{name}" if prefix else name
        return cls(bucket=bucket, base=base, name=name, legacy=bool(report))

    def manifest_folder(self, month: datetime) -> str:
        """The key prefix under which the period's manifest is delivered."""
        if self.legacy:
            end = month + relativedelta(months=1)
            return f"{self.base}/{month:%Y%m%d}-{end:%Y%m%d}/"
        return f"{self.base}/metadata/BILLING_PERIOD={month:%Y-%m}/"

    def is_manifest(self, key: str, folder: str) -> bool:
        name = f"{self.name}{MANIFEST_SUFFIX}"
        if self.legacy:
            # The assembly folders hold copies of older manifests; the one beside
            # them names the current assembly.
            return key == folder + name
        return key.endswith("/" + name)

    def data_files(self, manifest: S3File, content: bytes) -> list[S3File]:
        field = "reportKeys" if self.legacy else "dataFiles"
        try:
            entries = json.loads(content)[field]
        except (ValueError, KeyError, TypeError):
            raise ImportFailure(
                f"is not a {'CUR' if self.legacy else 'Data Exports'} manifest: no "
                f"{field} list",
                file=manifest.uri,
            ) from None
        if not isinstance(entries, list) or not all(
            isinstance(entry, str) and entry for entry in entries
        ):
            raise ImportFailure(f"{field} is not a list of keys", file=manifest.uri)
        return [self._file(entry) for entry in entries]

    def _file(self, entry: str) -> S3File:
        if entry.startswith("s3://"):
            bucket, _, key = entry.removeprefix("s3://").partition("/")
            return S3File(bucket, key)
        return S3File(self.bucket, entry)


class AwsS3CurFetcher:
    kind = "aws-cur"

    def __init__(self) -> None:
        # Set when fetch() returns: the periods its rows restate in full, and what
        # `remember` records of them.
        self.covered_periods: set[datetime] = set()
        self.seen: dict[str, dict] = {}

    @staticmethod
    def syncs(source: BillingSource) -> bool:
        """An aws-cur source without a bucket is one whose files people import."""
        return bool((source.config or {}).get("bucket"))

    def fetch(self, *, source: BillingSource, since: datetime) -> Iterator[dict]:
        """Decides what to load before it returns, and only downloads as the rows are
        read. Writes nothing: see `remember`."""
        delivery, bucket = Delivery.of(source), S3Bucket(source)
        months = months_since(since=since, now=timezone.now())
        manifests = {month: bucket.manifest(delivery, month) for month in months}
        if not any(manifests.values()):
            raise _no_manifest(source, delivery, months)
        seen = (source.config or {}).get(SEEN_KEY) or {}
        # billing_sync_source creates the sync's run just before it fetches.
        this_run = source.import_runs.aggregate(last=Max("pk"))["last"] or 0
        loaded, to_load = {}, []
        self.covered_periods.clear()
        for month, manifest in manifests.items():
            if manifest is None:
                continue
            files = bucket.data_files(delivery, manifest)
            period, digest = f"{month:%Y-%m}", _digest(files)
            if still_loaded(source, period, seen.get(period), digest):
                loaded[period] = seen[period]
                continue
            self.covered_periods.add(month)
            to_load += files
            loaded[period] = {"files": digest, "run": this_run}
        self.seen = loaded
        return bucket.rows(to_load)

    def remember(self, source: BillingSource) -> None:
        """Record what this sync loads; called in the import's transaction."""
        remember_seen(source, self.seen)


class S3Bucket:
    """The S3 calls of one sync, each turning what S3 says into the errors above."""

    def __init__(self, source: BillingSource) -> None:
        credentials = source.credentials
        self.secrets = [
            str(credentials[name])
            for name in ("secret_access_key", "session_token")
            if credentials.get(name)
        ]
        self.client = s3_client(
            region=config_text(source, "region") or "us-east-1",
            endpoint_url=_endpoint_url(source),
            credentials=_credentials(source),
        )

    def manifest(self, delivery: Delivery, month: datetime) -> S3File | None:
        """The period's current manifest, or None when it has none."""
        folder = delivery.manifest_folder(month)
        found = [
            (item["LastModified"], item["Key"], item["ETag"])
            for item in self._listing(delivery.bucket, folder)
            if delivery.is_manifest(item["Key"], folder)
        ]
        if not found:
            return None
        _, key, etag = max(found)
        return S3File(delivery.bucket, key, etag)

    def data_files(self, delivery: Delivery, manifest: S3File) -> list[S3File]:
        """The manifest's data files with their current ETags, listed in one go."""
        with self._errors(manifest.uri):
            answer = self.client.get_object(
                Bucket=manifest.bucket, Key=manifest.key, IfMatch=manifest.etag
            )
            content = answer["Body"].read()
        files = delivery.data_files(manifest, content)
        etags: dict[tuple[str, str], str] = {}
        for bucket in {file.bucket for file in files}:
            keys = [file.key for file in files if file.bucket == bucket]
            folder = common_folder(keys)
            for item in self._listing(bucket, folder):
                etags[bucket, item["Key"]] = item["ETag"]
        missing = [file.uri for file in files if (file.bucket, file.key) not in etags]
        if missing:
            raise ProviderError(
                f"{manifest.uri} lists {missing[0]}, which is not in the bucket (yet): "
                "a delivery may be under way"
            )
        return [
            S3File(file.bucket, file.key, etags[file.bucket, file.key])
            for file in files
        ]

    def rows(self, files: list[S3File]) -> Iterator[dict]:
        importer = AwsCurImporter()
        for file in files:
            with tempfile.TemporaryDirectory(prefix="spendtracker-cur-") as folder:
                path = self._download(file, Path(folder))
                try:
                    yield from importer.rows(path)
                except ImportFailure as failure:
                    raise ImportFailure(
                        failure.message,
                        file=file.uri,
                        row=failure.row,
                        column=failure.column,
                    ) from None

    def _download(self, file: S3File, folder: Path) -> Path:
        path = folder / (PurePosixPath(file.key).name or "data")
        with self._errors(file.uri), path.open("wb") as out:
            answer = self.client.get_object(
                Bucket=file.bucket, Key=file.key, IfMatch=file.etag
            )
            body = answer["Body"]
            try:
                for chunk in body.iter_chunks(DOWNLOAD_CHUNK):
                    out.write(chunk)
            finally:
                body.close()
        return path

    def _listing(self, bucket: str, prefix: str) -> Iterator[dict]:
        with self._errors(f"s3://{bucket}/{prefix}"):
            pages = self.client.get_paginator("list_objects_v2")
            for page in pages.paginate(Bucket=bucket, Prefix=prefix):
                yield from page.get("Contents", [])

    @contextmanager
    def _errors(self, where: str) -> Iterator[None]:
        try:
            yield
        except ClientError as exc:
            raise self._client_failure(exc, where) from None
        except NoCredentialsError:
            raise ImportFailure(
                f"{where}: no AWS credentials: set the source's credentials to "
                '{"access_key_id": ..., "secret_access_key": ...} or give the '
                "worker a role"
            ) from None
        except BotoCoreError as exc:
            raise ProviderError(
                self._redact(f"{where}: S3 could not be reached: {exc}")
            ) from None

    def _client_failure(self, exc: ClientError, where: str) -> Exception:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        if code in TRANSIENT_CODES or status >= 500:
            return ProviderError(f"{where}: S3 answered {code or status}")
        if code == "NoSuchBucket":
            bucket = where.removeprefix("s3://").partition("/")[0]
            return ImportFailure(f"{where}: the bucket {bucket} does not exist")
        if code in DENIED_CODES or status == 403:
            return ImportFailure(
                f"{where}: access was refused ({code or status}); check the source's "
                "credentials and the bucket policy"
            )
        return ImportFailure(f"{where}: S3 refused the request ({code or status})")

    def _redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "[the secret key]")
        return text


def s3_client(*, region: str, endpoint_url: str, credentials: Mapping[str, str]) -> Any:
    """The one way out to S3."""
    # Imported here: boto3 adds to every process start, and only a sync needs it.
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"max_attempts": RETRY_ATTEMPTS, "mode": "standard"},
        # S3-compatible stores and local endpoints address buckets by path.
        s3={"addressing_style": "path"} if endpoint_url else None,
        **TIMEOUTS,
    )
    session = boto3.session.Session(region_name=region, **credentials)
    return session.client("s3", endpoint_url=endpoint_url or None, config=config)


def _endpoint_url(source: BillingSource) -> str:
    """The S3-compatible store the config names, if allowed; "" for AWS itself."""
    url = config_text(source, "endpoint_url")
    return endpoint_allowed(source, url) if url else ""


def _credentials(source: BillingSource) -> dict[str, str]:
    """boto3 session arguments, or none for boto3's default chain."""
    given = source.credentials
    key_id, secret = given.get("access_key_id"), given.get("secret_access_key")
    if not key_id and not secret:
        return {}
    if not (isinstance(key_id, str) and key_id and isinstance(secret, str) and secret):
        raise ImportFailure(
            f"{source.name}: credentials need both access_key_id and "
            "secret_access_key (or neither, for the worker's own role)"
        )
    arguments = {"aws_access_key_id": key_id, "aws_secret_access_key": secret}
    if token := given.get("session_token"):
        arguments["aws_session_token"] = str(token)
    return arguments


def _digest(files: list[S3File]) -> str:
    listing = sorted(f"{file.uri} {file.etag}" for file in files)
    return hashlib.sha256("\n".join(listing).encode()).hexdigest()


def _no_manifest(
    source: BillingSource, delivery: Delivery, months: list[datetime]
) -> ImportFailure:
    where = ", ".join(
        f"s3://{delivery.bucket}/{delivery.manifest_folder(month)}" for month in months
    )
    return ImportFailure(
        f"{source.name}: no {delivery.name}{MANIFEST_SUFFIX} under {where}: check "
        "the bucket, prefix and export name, or wait for AWS's first delivery (up to "
        "24 hours after the export is created)"
    )
