"""The Google Cloud billing fetcher, on export rows in the shape its query returns
(tests/data/gcp/). Only the BigQuery client is replaced: by a recorded answer that
hands the rows over as google-cloud-bigquery does and keeps what it was asked."""

import copy
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import time_machine
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.db.models import Sum
from google.api_core import exceptions as google
from google.cloud.bigquery.table import Row

from accounts.models import Team
from billing.importers import gcp_billing
from billing.importers.base import ImportFailure, ProviderError
from billing.importers.gcp_billing import (
    bigquery_client,
    export_query,
    invoice_months,
    row_from_bigquery,
)
from billing.models import BillingSource, CostRecord, ImportRun
from billing.services import billing_sync_source
from projects.models import AllocationRule
from tests.billing.importing import failed_sync, sync
from tests.conftest import make_project, make_user

RECORDED = Path(__file__).resolve().parents[1] / "data" / "gcp"
NOW = datetime(2026, 10, 15, 12, tzinfo=UTC)
TABLE = "acme-finops.billing_export.gcp_billing_export_v1_01A2B3_C4D5E6_F7A8B9"
KEY = {
    "type": "service_account",
    "project_id": "acme-finops",
    "private_key_id": "3f1c0e9d8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e",
    "private_key": "-----BEGIN PRIVATE KEY-----\ntests-only\n-----END PRIVATE KEY-----",
    "client_email": "spendtracker@acme-finops.iam.gserviceaccount.com",
    "token_uri": "https://oauth2.googleapis.com/token",
}
SEPTEMBER = datetime(2026, 9, 1, tzinfo=UTC)
OCTOBER = datetime(2026, 10, 1, tzinfo=UTC)


def recorded(name: str) -> list[dict]:
    return json.loads((RECORDED / name).read_text())


def mapped(name: str) -> list[dict]:
    return [row_from_bigquery(record) for record in recorded(name)]


def total(rows: list[dict], column: str, period: datetime | None = None) -> Decimal:
    return sum(
        (
            row[column]
            for row in rows
            if period is None or row["billing_period_start"] == period
        ),
        Decimal(0),
    )


def as_client_returns(record: dict) -> Row:
    """A recorded row as google-cloud-bigquery hands it over: a Row, NUMERIC as
    Decimal, TIMESTAMP as an aware datetime, records as dicts, repeated as lists."""
    typed = copy.deepcopy(record)
    for name in ("usage_start_time", "usage_end_time"):
        typed[name] = datetime.fromisoformat(typed[name])
    for name in ("cost", "cost_at_list"):
        typed[name] = typed[name] and Decimal(typed[name])
    if typed["usage"] and typed["usage"]["amount"] is not None:
        typed["usage"]["amount"] = Decimal(typed["usage"]["amount"])
    for credit in typed["credits"]:
        credit["amount"] = Decimal(credit["amount"])
    return Row(tuple(typed.values()), {name: i for i, name in enumerate(typed)})


# The mapping, on recorded rows


def test_standard_export_rows_bill_cost_plus_credits_per_invoice_month():
    rows = mapped("standard_export_rows.json")
    assert total(rows, "billed_cost", SEPTEMBER) == Decimal("16.816336")
    assert total(rows, "billed_cost", OCTOBER) == Decimal("13.349281")
    assert total(rows, "effective_cost") == total(rows, "billed_cost")
    assert total(rows, "effective_cost") == Decimal("30.165617")
    assert total(rows, "contracted_cost") == Decimal("67.771834")
    assert total(rows, "list_cost") == Decimal("67.771834")
    assert {row["billing_currency"] for row in rows} == {"USD"}
    assert {row["provider_name"] for row in rows} == {"Google Cloud"}


def test_detailed_export_rows_keep_list_contracted_and_billed_costs_apart():
    rows = mapped("detailed_export_rows.json")
    gpu = rows[0]
    assert gpu["list_cost"] == Decimal("22.730066")
    assert gpu["contracted_cost"] == Decimal("21.593563")
    assert gpu["billed_cost"] == gpu["effective_cost"] == Decimal("14.035816")
    assert total(rows, "billed_cost", SEPTEMBER) == Decimal("18.671756")
    assert total(rows, "billed_cost", OCTOBER) == Decimal("-2.377667")
    assert total(rows, "list_cost") == Decimal("24.828339")
    assert total(rows, "contracted_cost") == Decimal("23.853836")
    assert {row["billing_currency"] for row in rows} == {"EUR"}


def test_cost_types_become_charge_categories():
    rows = mapped("standard_export_rows.json")
    assert [row["charge_category"] for row in rows] == [
        "Usage",
        "Usage",
        "Usage",
        "Usage",
        "Tax",
        "Credit",
        "Credit",
        "Credit",
        "Adjustment",
        "Usage",
    ]


def test_a_cost_type_google_adds_later_counts_as_an_adjustment():
    record = recorded("standard_export_rows.json")[8] | {"cost_type": "rounding error"}
    assert row_from_bigquery(record)["charge_category"] == "Adjustment"
    record["cost_type"] = "reseller_fee"
    assert row_from_bigquery(record)["charge_category"] == "Adjustment"


def test_only_a_correction_of_an_earlier_invoice_is_a_correction():
    standard = mapped("standard_export_rows.json")
    detailed = mapped("detailed_export_rows.json")
    # The SLA credit is no correction; August's usage, corrected on October's
    # invoice, is: both the negation and the restated charge.
    assert [row["charge_class"] for row in standard[5:8]] == [
        "",
        "Correction",
        "Correction",
    ]
    assert {
        standard[6]["billing_period_start"],
        standard[7]["billing_period_start"],
    } == {OCTOBER}
    # 03:00 UTC on 1 October is still 30 September on Google's Pacific invoice.
    assert detailed[4]["charge_period_start"] == datetime(2026, 10, 1, 3, tzinfo=UTC)
    assert detailed[4]["charge_class"] == "Correction"
    # A price correction within the open invoice month corrects nothing invoiced.
    assert (detailed[5]["charge_category"], detailed[5]["charge_class"]) == (
        "Credit",
        "",
    )


def test_resource_labels_win_over_project_labels_and_keys_stay_as_written():
    gpu = mapped("standard_export_rows.json")[0]
    assert gpu["tags"] == {
        "team": "research",
        "cost-center": "cc-4410",
        "run": "llama-ft-0914",
    }


def test_late_usage_keeps_its_hours_and_is_billed_in_its_invoice_month():
    late = mapped("standard_export_rows.json")[3]
    assert (late["charge_period_start"], late["charge_period_end"]) == (
        datetime(2026, 9, 30, 23, tzinfo=UTC),
        OCTOBER,
    )
    assert (late["billing_period_start"], late["billing_period_end"]) == (
        OCTOBER,
        datetime(2026, 11, 1, tzinfo=UTC),
    )


def test_each_row_names_its_account_project_service_and_usage():
    gpu = mapped("standard_export_rows.json")[0]
    assert gpu["billing_account_id"] == "01A2B3-C4D5E6-F7A8B9"
    assert (gpu["sub_account_id"], gpu["sub_account_name"]) == (
        "llm-train-prod",
        "LLM training",
    )
    assert (gpu["service_name"], gpu["service_category"]) == (
        "Compute Engine",
        "Compute",
    )
    assert (gpu["sku_id"], gpu["charge_description"]) == (
        "9C6A-E1F3-8C1B",
        "Nvidia Tesla A100 GPU running in Americas",
    )
    assert (gpu["region_id"], gpu["consumed_quantity"], gpu["consumed_unit"]) == (
        "us-central1",
        Decimal("28800"),
        "seconds",
    )
    assert gpu["resource_id"] == ""


def test_detailed_rows_name_their_resource():
    cluster = mapped("detailed_export_rows.json")[1]
    assert cluster["resource_id"] == (
        "//container.googleapis.com/projects/vision-serve/locations/europe-west4"
        "/clusters/serving"
    )
    assert cluster["resource_name"] == "serving"
    assert cluster["service_category"] == "Compute"


def test_an_account_level_row_without_project_or_location_maps_to_empty_fields():
    rounding = mapped("standard_export_rows.json")[8]
    assert (rounding["sub_account_id"], rounding["region_id"], rounding["tags"]) == (
        "",
        "",
        {},
    )
    assert rounding["consumed_quantity"] is None


@pytest.mark.parametrize(
    "name", ["standard_export_rows.json", "detailed_export_rows.json"]
)
def test_rows_typed_by_the_client_map_exactly_as_the_recorded_text(name):
    records = recorded(name)
    typed = [row_from_bigquery(as_client_returns(record)) for record in records]
    assert typed == [row_from_bigquery(record) for record in records]


@pytest.mark.parametrize(
    ("change", "column", "message"),
    [
        ({"cost": None}, "cost", "is empty but a cost is required"),
        ({"cost": "1,5"}, "cost", "'1,5' is not a number"),
        ({"cost": "NaN"}, "cost", "'NaN' is not a number"),
        ({"currency": "US$"}, "currency", "'US$' is not an ISO 4217 code"),
        ({"invoice": {"month": "2026-09"}}, "invoice.month", "is not a month"),
        ({"invoice": {"month": "202613"}}, "invoice.month", "is not a month"),
        ({"usage_start_time": None}, "usage_start_time", "is empty but a time"),
        ({"usage_end_time": "2026-09-14 09:00:00+00:00"}, "usage_end_time", "before"),
    ],
)
def test_a_row_it_cannot_read_is_refused_naming_the_column(change, column, message):
    record = recorded("standard_export_rows.json")[0] | change
    with pytest.raises(ImportFailure) as failure:
        row_from_bigquery(record)
    assert message in failure.value.message
    assert failure.value.column == column


# The query and the client


@pytest.mark.parametrize(
    "table",
    [
        "acme.billing.gcp_billing_export_v1_X` WHERE TRUE; DROP TABLE a.b.c --",
        "acme.billing.t`",
        "acme.billing.t\n",
        "acme billing.gcp_billing_export_v1_X",
        "billing.gcp_billing_export_v1_X",
        "a.b.c.d",
        "example.com:acme.billing.gcp_billing_export_v1_X",
    ],
)
def test_the_query_refuses_a_table_name_that_could_change_the_sql(table):
    with pytest.raises(ImportFailure, match="is not project.dataset.table"):
        export_query(table)


def test_only_the_detailed_export_is_asked_for_resource_columns():
    detailed = TABLE.replace(
        "gcp_billing_export_v1_", "gcp_billing_export_resource_v1_"
    )
    assert "resource.global_name" in export_query(detailed)
    assert "resource" not in export_query(TABLE)
    assert f"FROM `{TABLE}`" in export_query(TABLE)


def test_every_amount_is_cast_to_numeric_in_bigquery_before_it_is_read():
    sql = export_query(TABLE)
    for column in ("cost", "cost_at_list", "usage.amount", "credit.amount"):
        assert f"CAST({column} AS NUMERIC)" in sql


def test_invoice_months_run_from_the_window_start_to_now_across_a_year_end():
    assert invoice_months(
        since=datetime(2026, 12, 1, tzinfo=UTC),
        now=datetime(2027, 1, 5, 8, tzinfo=UTC),
    ) == ["202612", "202701"]


@pytest.fixture(scope="module")
def service_account_key() -> dict:
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return KEY | {"private_key": pem.decode()}


def test_the_client_is_built_from_the_key_for_the_configured_project(
    service_account_key,
):
    client = bigquery_client(
        project="acme-finops", service_account_info=service_account_key
    )
    assert client.project == "acme-finops"


@pytest.mark.parametrize(
    "broken",
    [
        {key: value for key, value in KEY.items() if key != "client_email"},
        KEY,  # its private key is no key at all
    ],
    ids=["without client_email", "with a broken private key"],
)
def test_a_key_that_is_not_a_service_account_key_is_refused_without_echoing_it(
    broken,
):
    with pytest.raises(ImportFailure, match="not a service-account key") as failure:
        bigquery_client(project="acme-finops", service_account_info=broken)
    assert "tests-only" not in str(failure.value)


# A sync, end to end, with a recorded answer where BigQuery would be


@dataclass
class RecordedBigQuery:
    """Stands where Google's API would be: answers the query with recorded rows, or
    with the error Google would raise, and keeps what it was asked."""

    rows: list[dict]
    error: Exception | None = None
    clients: list[tuple[str, dict]] = field(default_factory=list)
    queries: list[tuple[str, object]] = field(default_factory=list)
    page_sizes: list[int] = field(default_factory=list)
    closed: bool = False

    def query(self, sql: str, job_config: object = None) -> "RecordedBigQuery":
        self.queries.append((sql, job_config))
        return self

    def result(self, page_size: int) -> object:
        self.page_sizes.append(page_size)
        if self.error:
            raise self.error
        return (as_client_returns(row) for row in self.rows)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def bigquery(monkeypatch) -> RecordedBigQuery:
    recording = RecordedBigQuery(rows=recorded("standard_export_rows.json"))

    def client(*, project: str, service_account_info: dict) -> RecordedBigQuery:
        recording.clients.append((project, dict(service_account_info)))
        return recording

    monkeypatch.setattr(gcp_billing, "bigquery_client", client)
    return recording


@pytest.fixture
def source(db, bigquery) -> BillingSource:
    project, dataset, table = TABLE.split(".")
    source = BillingSource(
        name="Google Cloud",
        kind="gcp",
        config={"project": project, "dataset": dataset, "table": table},
    )
    source.credentials = KEY
    source.save()
    return source


@pytest.fixture(autouse=True)
def frozen_time():
    with time_machine.travel(NOW, tick=False):
        yield


def stored(column: str, **filters) -> Decimal:
    return CostRecord.objects.filter(**filters).aggregate(total=Sum(column))["total"]


def test_a_sync_loads_every_recorded_row_with_exact_totals(source):
    result = sync(source)
    assert (result["status"], result["rows"]) == ("imported", 10)
    assert result["billing_periods"] == ["2026-09", "2026-10"]
    assert result["billed"] == {"USD": "30.165617"}
    assert result["effective"] == {"USD": "30.165617"}
    assert stored("billed_cost") == Decimal("30.165617")
    assert stored("billed_cost", billing_period_start=SEPTEMBER) == Decimal("16.816336")
    assert stored("list_cost") == Decimal("67.771834")
    assert CostRecord.objects.filter(charge_class="Correction").count() == 2
    # September is invoiced; October is open until Google issues its invoice.
    assert set(
        CostRecord.objects.values_list("billing_period_start", "is_provisional")
    ) == {(SEPTEMBER, False), (OCTOBER, True)}


def test_the_query_asks_for_the_window_months_from_the_validated_table(
    source, bigquery
):
    sync(source)
    assert bigquery.clients == [("acme-finops", KEY)]
    [(sql, job_config)] = bigquery.queries
    assert f"FROM `{TABLE}`" in sql
    assert "WHERE invoice.month IN UNNEST(@invoice_months)" in sql
    parameters = {p.name: p for p in job_config.query_parameters}
    assert parameters["invoice_months"].values == ["202609", "202610"]
    assert parameters["scan_from"].value == datetime(2025, 9, 1, tzinfo=UTC)
    assert bigquery.page_sizes == [gcp_billing.PAGE_SIZE]
    assert bigquery.closed


def test_the_same_export_twice_is_unchanged(source):
    sync(source)
    loaded = list(CostRecord.objects.values_list("pk", flat=True))
    assert sync(source)["status"] == "unchanged"
    assert list(CostRecord.objects.values_list("pk", flat=True)) == loaded


def test_a_label_rule_allocates_a_training_runs_gpu_costs(source):
    team = Team.objects.create(name="Research", slug="research")
    project = make_project(team, make_user("lead@test.example"), "llama-ft")
    AllocationRule.objects.create(
        project=project, match_on="tag", tag_key="run", value="llama-ft-0914"
    )
    result = sync(source)
    assert stored("billed_cost", project=project) == Decimal("17.163362")
    assert result["unallocated"] == {"USD": "13.002255"}


def test_a_row_it_cannot_read_fails_the_sync_naming_table_row_and_column(
    source, bigquery
):
    bigquery.rows[2]["usage_end_time"] = "2026-09-20 23:00:00+00:00"
    assert (
        f"{TABLE}, row 3, column usage_end_time: is before usage_start_time (the row"
        " of invoice.month '202609', project.id 'llm-train-prod', sku.id "
        "'E5F0-6A5D-7BAD')"
    ) in failed_sync(source)
    assert not CostRecord.objects.exists()


@pytest.mark.parametrize(
    "error",
    [
        google.ServiceUnavailable("Error encountered during execution. Retrying"),
        google.InternalServerError("backendError"),
        google.TooManyRequests("Too many requests"),
        google.Forbidden(
            "Exceeded rate limits", errors=[{"reason": "rateLimitExceeded"}]
        ),
    ],
)
def test_a_bigquery_outage_fails_the_run_for_a_retry_and_keeps_what_was_loaded(
    source, bigquery, error
):
    sync(source)
    loaded = sorted(CostRecord.objects.values_list("pk", "billed_cost"))
    bigquery.error = error
    with pytest.raises(ProviderError):
        billing_sync_source(source_id=source.pk)
    source.refresh_from_db()
    assert "the provider failed: BigQuery:" in source.last_error
    assert ImportRun.objects.latest("pk").status == ImportRun.Status.FAILED
    assert sorted(CostRecord.objects.values_list("pk", "billed_cost")) == loaded


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (
            google.NotFound(f"Not found: Table {TABLE} was not found in location US"),
            "was not found",
        ),
        (
            google.Forbidden(
                "Access Denied: User does not have bigquery.jobs.create permission",
                errors=[{"reason": "accessDenied"}],
            ),
            "Access Denied",
        ),
        (google.BadRequest("Unrecognized name: cost_at_list"), "cost_at_list"),
    ],
)
def test_a_refusal_to_fix_in_the_source_fails_the_run_without_a_retry(
    source, bigquery, error, said
):
    bigquery.error = error
    outcome = billing_sync_source(source_id=source.pk)
    assert outcome.run.status == ImportRun.Status.FAILED
    assert outcome.run.error.startswith(f"{TABLE}: BigQuery refused: ")
    assert said in outcome.run.error
    assert KEY["private_key"] not in outcome.run.error


@pytest.mark.parametrize(
    ("config", "credentials", "said"),
    [
        ({"project": "acme-finops", "dataset": "billing_export"}, KEY, "config needs"),
        (
            {"project": "acme-finops", "dataset": "billing", "table": "t; --"},
            KEY,
            "is not project.dataset.table",
        ),
        (
            {"project": "acme-finops", "dataset": "billing", "table": "t"},
            {},
            "has no service-account key",
        ),
    ],
)
def test_a_source_set_up_incompletely_fails_before_asking_google(
    source, bigquery, config, credentials, said
):
    source.config, source.credentials = config, credentials
    source.save()
    outcome = billing_sync_source(source_id=source.pk)
    assert outcome.run.status == ImportRun.Status.FAILED
    assert said in outcome.run.error
    assert bigquery.clients == []


def test_a_key_whose_token_uri_is_not_googles_fails_before_it_is_used(
    source, bigquery, settings
):
    settings.SOURCE_ENDPOINT_ALLOWLIST = []
    source.credentials = KEY | {"token_uri": "http://127.0.0.1:8765/token"}
    source.save()
    message = failed_sync(source)
    assert "http://127.0.0.1:8765 is not an address of the provider" in message
    assert bigquery.clients == []
