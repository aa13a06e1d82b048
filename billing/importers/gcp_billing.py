"""Google Cloud billing, read from the Cloud Billing export to BigQuery.

A `gcp` source names the export table in `config`, such as {"project": "acme-finops",
"dataset": "billing_export", "table": "gcp_billing_export_v1_01A2B3_C4D5E6_F7A8B9"},
and holds a service-account key (the JSON Google issues) as its credentials. Query jobs
run in that project: the account needs BigQuery Job User there and BigQuery Data Viewer
on the dataset. The standard export (`gcp_billing_export_v1_<ACCOUNT>`) and the
detailed one (`gcp_billing_export_resource_v1_<ACCOUNT>`, told apart by that name) are
both read. Name the table itself, not a view: views do not expose `_PARTITIONTIME`.
The key's `token_uri`, where it asks for tokens, must be Google's
(oauth2.googleapis.com over https) or an address in SOURCE_ENDPOINT_ALLOWLIST.

One query per sync reads every row invoiced in the window's months (`invoice.month`),
so each billing period is replaced whole, with the late usage and the corrections that
Google invoices in a later month than their usage. Its partition filter only bounds
what BigQuery scans and bills, and reaches SCAN_LOOKBACK before the window because
those rows keep the usage times of the month they belong to: a correction to usage
older than that would be missed. Results stream page by page, in no set order (a sort
of millions of rows is what the query avoids): an unchanged export is recognised as
such when BigQuery answers from its cache, and otherwise loads again, replacing its
rows with themselves.

Each exported row becomes one cost row (`row_from_bigquery`):

- Amounts are FLOAT64 in the export; the query casts them to NUMERIC, so no float
  exists on the way. NUMERIC keeps 9 decimal places; Google states costs to 6.
- BilledCost: cost plus the sum of credits.amount (credits are negative).
- EffectiveCost: the same. Neither export carries amortised amounts, and there is
  nothing to amortise: Google bills commitment fees as lines of their own as the
  term runs, never as one up-front purchase.
- ListCost: cost_at_list, else cost. ContractedCost: cost (priced under the account's
  contract, before credits).
- ChargeCategory by cost_type: regular is Usage, tax Tax, adjustment Credit,
  rounding error Adjustment, and Adjustment for any type Google adds later.
- ChargeClass "Correction": an adjustment whose adjustment_info says it corrects
  usage, prices or metadata (a *_CORRECTION type or a negation mode), for usage that
  started before its invoice month, so it corrects an invoice already issued. The
  months are compared in Pacific time, as Google's invoices are.
- Charge period: [usage_start_time, usage_end_time). Billing period: the calendar
  month of invoice.month, in UTC like every month here.
- Tags: project.labels overlaid with the resource's labels, so a resource's own label
  wins over the same key on its project; keys are kept as written.
- Billing account: billing_account_id. Sub account: the project (id and name).
  Service: service.description, with a category only where it is plain
  (SERVICE_CATEGORIES). SKU: sku.id, described by sku.description. Resource:
  resource.global_name and resource.name (detailed export only). Region:
  location.region. Quantity: usage.amount in usage.unit.

The same rows also import from a file (`GcpBillingImporter`, format `gcp`), made by
the same `row_from_bigquery`:

- newline-delimited JSON as `bq extract --destination_format NEWLINE_DELIMITED_JSON`
  writes the export table (plain or gzip): nested records and repeated fields as JSON
  objects and lists, FLOAT64 amounts as JSON numbers (read into Decimal as written,
  never through a float), TIMESTAMPs as "2026-09-14 10:00:00 UTC". A JSON list of
  such rows (`bq query --format=json`) is read too. Columns this module does not use
  are ignored.
- CSV: BigQuery cannot extract a table with nested fields to CSV, so a CSV is the
  result of a query that flattens them, one column per field used here, named by its
  path (`service.description`) or with `_` for `.` (`service_description`), and the
  repeated fields `credits`, `labels` and `project.labels` as JSON text
  (`TO_JSON_STRING(credits) AS credits`).

A file restates the invoice months its rows name: export whole months
(`WHERE invoice.month IN (...)`), as a sync reads them.
"""

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import closing, contextmanager
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from dateutil.relativedelta import relativedelta
from django.utils import timezone

from billing.importers.base import (
    TOO_DEEP,
    CsvFile,
    ImportFailure,
    ProviderError,
    checked_texts,
    clean,
    first_present,
    new_row,
)
from billing.importers.http import endpoint_allowed
from billing.importers.json_file import JsonFile
from billing.models import BillingSource
from core.currencies import ISO_4217_CODES, ZERO

if TYPE_CHECKING:
    from google.cloud import bigquery

PROVIDER = "Google Cloud"
PAGE_SIZE = 10_000
SCAN_LOOKBACK = relativedelta(months=12)
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
PACIFIC = ZoneInfo("America/Los_Angeles")

# project.dataset.table: what BigQuery names allow, minus anything that could end the
# quoted name in the SQL text (a table name cannot be a query parameter).
TABLE_NAME = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
INVOICE_MONTH = re.compile(r"(\d{4})(0[1-9]|1[0-2])")
DETAILED_EXPORT = "gcp_billing_export_resource_v1_"

# Only the columns used: BigQuery bills by the bytes of the columns it reads.
EXPORT_QUERY = """
SELECT
  billing_account_id,
  STRUCT(invoice.month AS month) AS invoice,
  cost_type,
  STRUCT(service.id AS id, service.description AS description) AS service,
  STRUCT(sku.id AS id, sku.description AS description) AS sku,
  usage_start_time,
  usage_end_time,
  STRUCT(project.id AS id, project.name AS name, project.labels AS labels) AS project,
  labels,
  STRUCT(location.region AS region) AS location,
  CAST(cost AS NUMERIC) AS cost,
  CAST(cost_at_list AS NUMERIC) AS cost_at_list,
  currency,
  STRUCT(CAST(usage.amount AS NUMERIC) AS amount, usage.unit AS unit) AS usage,
  ARRAY(
    SELECT AS STRUCT credit.name, credit.type, CAST(credit.amount AS NUMERIC) AS amount
    FROM UNNEST(credits) AS credit
  ) AS credits,
  adjustment_info{resource}
FROM `{table}`
WHERE invoice.month IN UNNEST(@invoice_months)
  AND (_PARTITIONTIME >= @scan_from OR _PARTITIONTIME IS NULL)
"""
# The fields a file's rows carry (the query's columns), and those that are lists.
FILE_TEXT_PATHS = (
    "billing_account_id",
    "invoice.month",
    "cost_type",
    "service.id",
    "service.description",
    "sku.id",
    "sku.description",
    "usage_start_time",
    "usage_end_time",
    "project.id",
    "project.name",
    "location.region",
    "cost",
    "cost_at_list",
    "currency",
    "usage.amount",
    "usage.unit",
    "adjustment_info.type",
    "adjustment_info.mode",
    "resource.name",
    "resource.global_name",
)
FILE_JSON_PATHS = ("credits", "labels", "project.labels")
# What tells a file of export rows apart (a CSV header, or an NDJSON row's keys).
FILE_MARKERS = frozenset(
    {"billing_account_id", "cost_type", "usage_start_time", "cost"}
)
RESOURCE_COLUMNS = """,
  STRUCT(resource.name AS name, resource.global_name AS global_name) AS resource"""

CHARGE_CATEGORIES = {
    "regular": "Usage",
    "tax": "Tax",
    "adjustment": "Credit",
    "rounding_error": "Adjustment",
}
CORRECTION_TYPES = frozenset(
    {"USAGE_CORRECTION", "PRICE_CORRECTION", "METADATA_CORRECTION"}
)
CORRECTION_MODES = frozenset(
    {"PARTIAL_CORRECTION", "COMPLETE_NEGATION", "COMPLETE_NEGATION_WITH_REMONETIZATION"}
)
# FOCUS ServiceCategory for the services where no one would argue about it.
SERVICE_CATEGORIES = {
    "Compute Engine": "Compute",
    "Kubernetes Engine": "Compute",
    "Cloud Run": "Compute",
    "Vertex AI": "AI and Machine Learning",
    "Cloud TPU": "AI and Machine Learning",
    "Cloud Storage": "Storage",
    "Cloud SQL": "Databases",
    "Networking": "Networking",
    "Cloud Logging": "Management and Governance",
    "Cloud Monitoring": "Management and Governance",
}
# BigQuery answers 403 for these; they pass, unlike a missing permission.
QUOTA_REASONS = frozenset({"rateLimitExceeded", "quotaExceeded"})


class GcpBillingFetcher:
    kind = "gcp"

    def fetch(self, *, source: BillingSource, since: datetime) -> Iterator[dict]:
        project, table = _project_and_table(source.config)
        sql = export_query(table)
        key = source.credentials
        if not key:
            raise ImportFailure(f"{source.name} has no service-account key")
        endpoint_allowed(source, str(key.get("token_uri") or GOOGLE_TOKEN_URI))
        months = invoice_months(since=since, now=timezone.now())
        parameters = _parameters(months, scan_from=since - SCAN_LOOKBACK)
        with _google_errors(table):
            client = bigquery_client(project=project, service_account_info=key)
            with closing(client):
                job = client.query(sql, job_config=parameters)
                yield from _cost_rows(job.result(page_size=PAGE_SIZE), table)


class GcpBillingImporter:
    """The export's rows from a file: newline-delimited JSON or CSV (see above)."""

    name = "gcp"

    @staticmethod
    def accepts(header: list[str]) -> bool:
        return set(header) >= FILE_MARKERS

    def rows(self, path: Path) -> Iterator[dict]:
        json_file = JsonFile(path)
        spelled: dict[str, str] = {}  # a JSON row's fields are named by their paths
        if json_file.is_json():
            records = json_file.records()
        else:
            csv_file = CsvFile(path)
            spelled = _file_columns(csv_file.header(), path.name)
            records = _csv_records(csv_file, spelled)
        for number, record in records:
            try:
                yield row_from_bigquery(record)
            except ImportFailure as failure:
                raise ImportFailure(
                    failure.message,
                    file=path.name,
                    row=number,
                    column=spelled.get(failure.column, failure.column),
                ) from None


def _file_columns(header: list[str], file: str) -> dict[str, str]:
    """{field path: the CSV column that holds it} for the fields used here."""
    paths = {
        spelling: path
        for path in (*FILE_TEXT_PATHS, *FILE_JSON_PATHS)
        for spelling in (path, path.replace(".", "_"))
    }
    columns = {paths[column]: column for column in header if column in paths}
    absent = [path for path in sorted(FILE_MARKERS) if path not in columns]
    if absent:
        raise ImportFailure(
            "is not a Google Cloud billing export: missing column " + ", ".join(absent),
            file=file,
        )
    return columns


def _csv_records(
    csv_file: CsvFile, columns: dict[str, str]
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Each CSV row as the nested record the query would have returned."""
    for number, cells in csv_file.records():
        record: dict[str, Any] = {}
        for path, column in columns.items():
            value: Any = clean(cells[column])
            if value is not None and path in FILE_JSON_PATHS:
                value = _json_cell(
                    value, file=csv_file.path.name, row=number, column=column
                )
            *parents, leaf = path.split(".")
            nested = record
            for parent in parents:
                nested = nested.setdefault(parent, {})
            nested[leaf] = value
        yield number, record


def _json_cell(value: str, *, file: str, row: int, column: str) -> list:
    try:
        items = json.loads(value, parse_float=Decimal)
    except json.JSONDecodeError:
        items = None
    except RecursionError:
        raise ImportFailure(TOO_DEEP, file=file, row=row, column=column) from None
    if not isinstance(items, list):
        raise ImportFailure(
            f"{value[:40]!r} is not a JSON list", file=file, row=row, column=column
        )
    return items


def bigquery_client(
    *, project: str, service_account_info: Mapping[str, str]
) -> "bigquery.Client":
    """The one way out to Google; tests put a recorded answer in its place."""
    # Imported here: the client library adds half a second to every process start,
    # and only a sync needs it.
    from google.cloud import bigquery
    from google.oauth2 import service_account

    try:
        credentials = service_account.Credentials.from_service_account_info(
            service_account_info
        )
    except ValueError as exc:
        raise ImportFailure(
            f"the credentials are not a service-account key: {exc}"
        ) from exc
    return bigquery.Client(project=project, credentials=credentials)


def export_query(table: str) -> str:
    """The query for one export table, refusing a name that could change the SQL."""
    if not TABLE_NAME.fullmatch(table):
        raise ImportFailure(
            f"the table {table[:200]!r} is not project.dataset.table in letters, "
            "digits, '-' and '_'"
        )
    detailed = table.rpartition(".")[2].startswith(DETAILED_EXPORT)
    return EXPORT_QUERY.format(
        table=table, resource=RESOURCE_COLUMNS if detailed else ""
    )


def invoice_months(*, since: datetime, now: datetime) -> list[str]:
    """Invoice months ("YYYYMM") from the one containing `since` to the current one."""
    month, last = date(since.year, since.month, 1), date(now.year, now.month, 1)
    months = []
    while month <= last:
        months.append(f"{month:%Y%m}")
        month += relativedelta(months=1)
    return months


def row_from_bigquery(record: Mapping[str, Any]) -> dict:
    """One row of the export, as the query selects it, as a cost row. Values may be
    typed as the client library returns them (Decimal, datetime) or be text."""
    cost = _amount(record, "cost")
    if cost is None:
        raise ImportFailure("is empty but a cost is required", column="cost")
    billed = cost + _credits(record)
    invoice_month = _invoice_month(record)
    start, end = _charge_period(record)
    cost_type = _text(record, "cost_type").lower().replace(" ", "_")
    service = _text(record, "service.description")
    return checked_texts(
        new_row()
        | {
            "billing_account_id": _text(record, "billing_account_id"),
            "sub_account_id": _text(record, "project.id"),
            "sub_account_name": _text(record, "project.name"),
            "provider_name": PROVIDER,
            "billing_currency": _currency(record),
            "billed_cost": billed,
            "effective_cost": billed,
            "list_cost": first_present(_amount(record, "cost_at_list"), cost),
            "contracted_cost": cost,
            "charge_category": CHARGE_CATEGORIES.get(cost_type, "Adjustment"),
            "charge_class": _charge_class(record, cost_type, invoice_month, start),
            "charge_description": _text(record, "sku.description"),
            "charge_period_start": start,
            "charge_period_end": end,
            "billing_period_start": invoice_month,
            "billing_period_end": invoice_month + relativedelta(months=1),
            "service_name": service,
            "service_category": SERVICE_CATEGORIES.get(service, ""),
            "sku_id": _text(record, "sku.id"),
            "resource_id": _text(record, "resource.global_name"),
            "resource_name": _text(record, "resource.name"),
            "region_id": _text(record, "location.region"),
            "consumed_quantity": _amount(record, "usage.amount"),
            "consumed_unit": _text(record, "usage.unit"),
            "tags": _labels(record, "project.labels") | _labels(record, "labels"),
        }
    )


def _project_and_table(config: Mapping[str, Any]) -> tuple[str, str]:
    parts = [str(config.get(key) or "") for key in ("project", "dataset", "table")]
    if not all(parts):
        raise ImportFailure(
            "the source's config needs the export table's project, dataset and table"
        )
    return parts[0], ".".join(parts)


def _parameters(months: list[str], *, scan_from: datetime) -> "bigquery.QueryJobConfig":
    from google.cloud import bigquery

    return bigquery.QueryJobConfig(
        query_parameters=[
            bigquery.ArrayQueryParameter("invoice_months", "STRING", months),
            bigquery.ScalarQueryParameter("scan_from", "TIMESTAMP", scan_from),
        ]
    )


def _cost_rows(records: Iterable[Mapping[str, Any]], table: str) -> Iterator[dict]:
    for number, record in enumerate(records, start=1):
        try:
            row = row_from_bigquery(record)
        except ImportFailure as failure:
            # The row's position in an unordered result does not find it again in
            # the table; what it was invoiced for does.
            found_by = ", ".join(
                f"{path} {_text(record, path)!r}"
                for path in ("invoice.month", "project.id", "sku.id")
            )
            raise ImportFailure(
                f"{failure.message} (the row of {found_by})",
                file=table,
                row=number,
                column=failure.column,
            ) from None
        yield row


@contextmanager
def _google_errors(table: str) -> Iterator[None]:
    """What Google raises, as a ProviderError (try again later) or an ImportFailure
    (the source's settings or permissions need fixing first)."""
    from google.api_core import exceptions as api
    from google.auth import exceptions as auth
    from requests import RequestException

    try:
        yield
    except (
        api.TooManyRequests,
        api.ServerError,
        api.RetryError,
        auth.TransportError,
        RequestException,
    ) as exc:
        raise ProviderError(f"BigQuery: {exc}") from exc
    except api.GoogleAPICallError as exc:
        reasons = {error.get("reason") for error in exc.errors or ()}
        if reasons & QUOTA_REASONS:
            raise ProviderError(f"BigQuery: {exc}") from exc
        raise ImportFailure(f"BigQuery refused: {exc}", file=table) from exc
    except auth.GoogleAuthError as exc:
        raise ImportFailure(f"Google refused the key: {exc}", file=table) from exc


def _field(record: Mapping[str, Any], path: str) -> Any:
    value: Any = record
    for name in path.split("."):
        if value is None:
            return None
        value = value.get(name)
    return value


def _text(record: Mapping[str, Any], path: str) -> str:
    value = _field(record, path)
    return "" if value is None else str(value)


def _decimal(value: Any, column: str) -> Decimal | None:
    """NUMERIC arrives as Decimal, or as text in recorded rows; both read exactly."""
    if value is None or value == "":
        return None
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        amount = None
    if amount is None or not amount.is_finite():
        raise ImportFailure(f"{str(value)[:40]!r} is not a number", column=column)
    return amount


def _amount(record: Mapping[str, Any], path: str) -> Decimal | None:
    return _decimal(_field(record, path), path)


def _credits(record: Mapping[str, Any]) -> Decimal:
    amounts = (
        _decimal(credit.get("amount"), "credits.amount")
        for credit in record.get("credits") or ()
    )
    return sum((amount for amount in amounts if amount is not None), ZERO)


def _timestamp(record: Mapping[str, Any], path: str) -> datetime:
    value = _field(record, path)
    if isinstance(value, str) and value:
        try:
            # `bq extract` writes "2026-09-14 10:00:00 UTC".
            value = datetime.fromisoformat(value.removesuffix(" UTC"))
        except ValueError:
            raise ImportFailure(f"{value[:40]!r} is not a time", column=path) from None
    if not isinstance(value, datetime):
        raise ImportFailure("is empty but a time is required", column=path)
    # BigQuery TIMESTAMPs are UTC instants; text without an offset means UTC too.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _charge_period(record: Mapping[str, Any]) -> tuple[datetime, datetime]:
    start = _timestamp(record, "usage_start_time")
    end = _timestamp(record, "usage_end_time")
    if end < start:
        raise ImportFailure("is before usage_start_time", column="usage_end_time")
    return start, end


def _invoice_month(record: Mapping[str, Any]) -> datetime:
    value = _text(record, "invoice.month")
    month = INVOICE_MONTH.fullmatch(value)
    if not month:
        raise ImportFailure(
            f"{value[:40]!r} is not a month as YYYYMM", column="invoice.month"
        )
    return datetime(int(month[1]), int(month[2]), 1, tzinfo=UTC)


def _currency(record: Mapping[str, Any]) -> str:
    currency = _text(record, "currency").upper()
    if currency not in ISO_4217_CODES:
        raise ImportFailure(
            f"{currency[:40]!r} is not an ISO 4217 code", column="currency"
        )
    return currency


def _charge_class(
    record: Mapping[str, Any], cost_type: str, invoice_month: datetime, start: datetime
) -> str:
    if cost_type != "adjustment":
        return ""
    corrects = (
        _text(record, "adjustment_info.type") in CORRECTION_TYPES
        or _text(record, "adjustment_info.mode") in CORRECTION_MODES
    )
    invoiced_earlier = f"{start.astimezone(PACIFIC):%Y%m}" < f"{invoice_month:%Y%m}"
    return "Correction" if corrects and invoiced_earlier else ""


def _labels(record: Mapping[str, Any], path: str) -> dict[str, str]:
    return {
        str(label["key"]): "" if label.get("value") is None else str(label["value"])
        for label in _field(record, path) or ()
    }
