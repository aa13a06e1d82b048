"""The Anthropic cost report fetcher, against a local fake of the Admin API that serves
two recorded pages (tests/data/anthropic/), checks the key, the version header and the
query, and records every request it receives."""

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import time_machine

from billing.importers import http as provider_http
from billing.models import BillingSource, CostRecord, ImportRun
from tests.billing.fakes import ApiError, FakeProvider, Request, fake_provider_fixture
from tests.billing.importing import failed_sync, run_import, sync, total

pytestmark = pytest.mark.django_db

PAGES = Path(__file__).resolve().parents[1] / "data" / "anthropic"
API_KEY = "sk-ant-admin01-tests0nlyQm9vZ2xlLWlzLW5vdC1hLWtleQ-AbCdEfAA"
NEXT_PAGE = "page_MjAyNi0xMC0wMlQwMDowMDowMFo="
NOW = datetime(2026, 10, 15, 12, tzinfo=UTC)
# billing_sync asks from the first day of the previous month.
SINCE = "2026-09-01T00:00:00Z"
WORKSPACE = "wrkspc_01JwQvzr7rXLA5AGx3HKfFUJ"


@dataclass
class FakeAnthropic(FakeProvider):
    pages: dict[str | None, bytes] = field(
        default_factory=lambda: {
            None: (PAGES / "cost_report_page_1.json").read_bytes(),
            NEXT_PAGE: (PAGES / "cost_report_page_2.json").read_bytes(),
        }
    )
    overloaded = "Internal server error"

    def refusal(self, request: Request) -> ApiError | None:
        if request["headers"]["x-api-key"] != API_KEY:
            return ApiError(401, "invalid x-api-key", "authentication_error")
        if request["headers"]["anthropic-version"] != "2023-06-01":
            return ApiError(400, "bad anthropic-version", "invalid_request_error")
        return None

    def rejection(self, request: Request) -> ApiError | None:
        if request["path"] != "/v1/organizations/cost_report":
            return ApiError(404, "Not found", "not_found_error")
        expected = {
            "starting_at": [SINCE],
            "bucket_width": ["1d"],
            "group_by[]": ["workspace_id", "description"],
        }
        if wrong := self.wrong_parameters(request, expected=expected, most=31):
            return ApiError(
                400, f"invalid query: {', '.join(wrong)}", "invalid_request_error"
            )
        return None

    def error_body(self, error: ApiError) -> dict:
        return {
            "type": "error",
            "error": {"type": error.kind, "message": error.message},
        }


fake_anthropic = fake_provider_fixture(FakeAnthropic)


@pytest.fixture
def source(fake_anthropic) -> BillingSource:
    source = BillingSource(
        name="Anthropic org", kind="anthropic", config={"base_url": fake_anthropic.url}
    )
    source.credentials = {"api_key": API_KEY}
    source.save()
    return source


@pytest.fixture(autouse=True)
def frozen_time():
    with time_machine.travel(NOW, tick=False):
        yield


def recorded_cents() -> list[Decimal]:
    cents = []
    for name in ("cost_report_page_1.json", "cost_report_page_2.json"):
        page = json.loads((PAGES / name).read_text(), parse_float=Decimal)
        for bucket in page["data"]:
            cents += [Decimal(result["amount"]) for result in bucket["results"]]
    return cents


def test_a_sync_loads_both_pages_in_dollars_exactly(source):
    result = sync(source)
    expected = sum(recorded_cents(), Decimal(0)) / 100
    assert (result["status"], result["rows"]) == ("imported", len(recorded_cents()))
    assert Decimal(result["billed"]["USD"]) == expected
    assert Decimal(result["effective"]["USD"]) == expected
    assert total(CostRecord.objects) == expected
    assert result["billing_periods"] == ["2026-09", "2026-10"]


def test_it_asks_from_the_previous_month_and_fetches_both_pages(source, fake_anthropic):
    sync(source)
    first, second = fake_anthropic.requests
    assert first["query"]["starting_at"] == [SINCE]
    assert first["query"]["group_by[]"] == ["workspace_id", "description"]
    assert "page" not in first["query"]
    assert second["query"]["page"] == [NEXT_PAGE]
    for request in (first, second):
        assert request["headers"]["x-api-key"] == API_KEY
        assert request["headers"]["anthropic-version"] == "2023-06-01"


def test_an_amount_in_cents_becomes_dollars_without_losing_a_digit(source):
    sync(source)
    row = CostRecord.objects.get(
        charge_period_start=datetime(2026, 9, 4, tzinfo=UTC),
    )
    # "70312.123456789" cents in the recorded page.
    assert row.billed_cost == Decimal("703.12123456789")
    assert row.billed_cost == row.effective_cost == row.list_cost == row.contracted_cost
    assert row.billing_currency == "USD"


def test_each_result_becomes_a_row_for_its_day_workspace_and_description(source):
    sync(source)
    row = CostRecord.objects.get(
        charge_period_start=datetime(2026, 10, 15, tzinfo=UTC),
        charge_description="Web Search Usage",
    )
    assert row.billed_cost == Decimal("1.00")
    assert (row.provider_name, row.service_name, row.service_category) == (
        "Anthropic",
        "Claude API",
        "AI and Machine Learning",
    )
    assert row.billing_account_id == "anthropic"
    assert (row.tags, row.sub_account_id) == (
        {"anthropic_workspace_id": WORKSPACE},
        WORKSPACE,
    )
    assert row.charge_period_end == datetime(2026, 10, 16, tzinfo=UTC)
    assert (row.billing_period_start, row.billing_period_end) == (
        datetime(2026, 10, 1, tzinfo=UTC),
        datetime(2026, 11, 1, tzinfo=UTC),
    )
    assert row.is_provisional


def test_the_default_workspace_which_has_no_id_is_tagged_default(source):
    sync(source)
    row = CostRecord.objects.get(billed_cost=Decimal("0.12000000001"))
    assert row.tags == {"anthropic_workspace_id": "default"}


def test_a_500_is_retried_and_the_sync_then_succeeds(source, fake_anthropic):
    fake_anthropic.fail(500)
    fake_anthropic.fail(503)
    assert sync(source)["status"] == "imported"
    assert len(fake_anthropic.requests) == 4
    assert total(CostRecord.objects) == sum(recorded_cents(), Decimal(0)) / 100


def test_a_persistent_503_fails_the_sync_and_keeps_what_was_loaded(
    source, fake_anthropic
):
    sync(source)
    loaded = sorted(CostRecord.objects.values_list("pk", "billed_cost"))
    fake_anthropic.requests.clear()
    fake_anthropic.fail(503, times=provider_http.RETRIES + 1)
    failed_sync(source)
    assert len(fake_anthropic.requests) == provider_http.RETRIES + 1
    source.refresh_from_db()
    assert "Anthropic still answered HTTP 503 after 4 retries" in source.last_error
    # What the provider answered goes to the log, never to the portal.
    assert "Internal server error" not in source.last_error
    assert ImportRun.objects.latest("pk").status == ImportRun.Status.FAILED
    assert sorted(CostRecord.objects.values_list("pk", "billed_cost")) == loaded


def test_a_refused_key_fails_at_once_and_is_never_repeated(source, fake_anthropic):
    wrong_key = "sk-ant-admin01-revokedAAAAbbbbCCCCdddd0123456789"
    source.credentials = {"api_key": wrong_key}
    source.save()
    message = failed_sync(source)
    assert len(fake_anthropic.requests) == 1
    source.refresh_from_db()
    run = ImportRun.objects.latest("pk")
    assert "the API key was refused (HTTP 401)" in message
    assert "invalid x-api-key" not in message
    for text in (message, source.last_error, run.error):
        assert wrong_key not in text
    assert not CostRecord.objects.exists()


def test_an_amount_that_is_not_a_number_fails_naming_the_field(source, fake_anthropic):
    page = (PAGES / "cost_report_page_2.json").read_text()
    fake_anthropic.pages[NEXT_PAGE] = page.replace('"123.78912"', '"n/a"').encode()
    message = failed_sync(source)
    assert (
        "Anthropic /v1/organizations/cost_report page 2: "
        "field data[0].results[1].amount is 'n/a', not a number"
    ) in message
    assert not CostRecord.objects.exists()


def test_more_pages_without_a_cursor_fails_instead_of_stopping_short(
    source, fake_anthropic
):
    page = (PAGES / "cost_report_page_2.json").read_text()
    fake_anthropic.pages[NEXT_PAGE] = page.replace(
        '"has_more": false', '"has_more": true'
    ).encode()
    message = failed_sync(source)
    assert "page 2: field next_page is None, not a text" in message
    assert not CostRecord.objects.exists()


def test_a_source_without_a_key_says_how_to_set_one(source, fake_anthropic):
    source.credentials = {}
    source.save()
    assert "Anthropic org has no API key" in failed_sync(source)
    assert fake_anthropic.requests == []


COMPARED = [
    f.attname
    for f in CostRecord._meta.concrete_fields
    if f.attname not in ("id", "source_id", "import_run_id")
]


def records_of(source_name: str) -> list[tuple]:
    rows = CostRecord.objects.filter(source__name=source_name)
    return sorted(rows.values_list(*COMPARED), key=repr)


def test_the_pages_saved_to_a_file_import_as_a_sync_loads_them(source):
    sync(source)
    # The same costs in a second source, on purpose.
    code, result = run_import(
        PAGES / "cost_report_saved.json", source="Saved pages", allow_overlap=True
    )
    assert code == 0, result["error"]
    assert BillingSource.objects.get(name="Saved pages").kind == "anthropic"
    assert records_of("Saved pages") == records_of(source.name)


def test_a_saved_page_that_says_more_follow_is_refused_as_incomplete():
    code, result = run_import(PAGES / "cost_report_page_1.json", source="Saved pages")
    assert (code, result["status"]) == (1, "failed")
    assert result["error"] == (
        "cost_report_page_1.json: field has_more is true, but no page follows in "
        "the file: save every page of the answer"
    )
    assert not CostRecord.objects.exists()


def test_the_last_page_alone_imports_as_one_page(tmp_path):
    page = json.loads((PAGES / "cost_report_page_2.json").read_text())
    results = sum(len(bucket["results"]) for bucket in page["data"])
    code, result = run_import(
        PAGES / "cost_report_page_2.json", source="Saved pages", format="anthropic"
    )
    assert (code, result["rows"]) == (0, results)


def test_an_endpoint_of_another_host_fails_the_sync_before_the_key_is_sent(
    source, fake_anthropic, settings
):
    settings.SOURCE_ENDPOINT_ALLOWLIST = []  # the fake is a local listener again
    message = failed_sync(source)
    assert fake_anthropic.requests == []
    assert f"the endpoint {fake_anthropic.url} is not an address of the provider" in (
        message
    )
    assert "SOURCE_ENDPOINT_ALLOWLIST" in message
    assert API_KEY not in message
    assert ImportRun.objects.latest("pk").status == ImportRun.Status.FAILED


def test_a_redirect_is_not_followed_so_the_key_never_reaches_another_host(
    source, fake_anthropic, monkeypatch
):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    elsewhere = fake_anthropic.url.replace("127.0.0.1", "localhost")
    fake_anthropic.fail(302, Location=f"{elsewhere}/v1/organizations/cost_report")
    message = failed_sync(source)
    assert len(fake_anthropic.requests) == 1
    assert "Anthropic answered with a redirect (HTTP 302), which is not followed" in (
        message
    )
    assert not CostRecord.objects.exists()
