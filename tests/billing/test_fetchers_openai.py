"""The OpenAI Costs API fetcher, against a local fake of the API that serves two
recorded pages (tests/data/openai/), checks the key and the query, and records every
request it receives."""

import json
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import time_machine

from accounts.models import Team
from billing.importers import http as provider_http
from billing.models import BillingSource, CostRecord, ImportRun
from billing.tasks import billing_sync
from projects.models import AllocationRule
from tests.billing.fakes import (
    ApiError,
    FakeProvider,
    Request,
    fake_provider_fixture,
)
from tests.billing.importing import failed_sync, run_import, sync, total
from tests.conftest import make_project, make_user

pytestmark = pytest.mark.django_db

PAGES = Path(__file__).resolve().parents[1] / "data" / "openai"
API_KEY = "sk-admin-tests0nly9f8e7d6c5b4a39281706f5e4d3c2b1a0"
NEXT_PAGE = "page_AAAAAGjaCQAAAAAAaNoJAA=="
NOW = datetime(2026, 10, 15, 12, tzinfo=UTC)
# billing_sync asks from the first day of the previous month.
SINCE = int(datetime(2026, 9, 1, tzinfo=UTC).timestamp())
PROJECT = "proj_Kx3b9Qm2ZtR7wVn1YcHa"


@dataclass
class FakeOpenAI(FakeProvider):
    pages: dict[str | None, bytes] = field(
        default_factory=lambda: {
            None: (PAGES / "costs_page_1.json").read_bytes(),
            NEXT_PAGE: (PAGES / "costs_page_2.json").read_bytes(),
        }
    )
    overloaded = "The server is overloaded."

    def refusal(self, request: Request) -> ApiError | None:
        authorization = request["headers"]["Authorization"]
        if authorization != f"Bearer {API_KEY}":
            # OpenAI names the key it was given (masked); this one is less careful.
            given = authorization.removeprefix("Bearer ")
            return ApiError(401, f"Incorrect API key provided: {given}.")
        return None

    def rejection(self, request: Request) -> ApiError | None:
        if request["path"] != "/v1/organization/costs":
            return ApiError(404, f"Invalid URL (GET {request['path']})")
        expected = {
            "start_time": [str(SINCE)],
            "bucket_width": ["1d"],
            "group_by": ["project_id", "line_item"],
        }
        if wrong := self.wrong_parameters(request, expected=expected, most=180):
            return ApiError(400, f"Invalid parameters: {', '.join(wrong)}")
        return None

    def error_body(self, error: ApiError) -> dict:
        return {"error": {"message": error.message, "type": "invalid_request_error"}}


fake_openai = fake_provider_fixture(FakeOpenAI)


@pytest.fixture
def source(fake_openai) -> BillingSource:
    source = BillingSource(
        name="OpenAI org",
        kind="openai",
        config={"base_url": fake_openai.url, "organization": "org-Q8t2vXb3LmN0pRs7"},
    )
    source.credentials = {"api_key": API_KEY}
    source.save()
    return source


@pytest.fixture(autouse=True)
def frozen_time():
    with time_machine.travel(NOW, tick=False):
        yield


def recorded_amounts() -> list[Decimal]:
    amounts = []
    for name in ("costs_page_1.json", "costs_page_2.json"):
        page = json.loads((PAGES / name).read_text(), parse_float=Decimal)
        for bucket in page["data"]:
            amounts += [Decimal(r["amount"]["value"]) for r in bucket["results"]]
    return amounts


def test_a_sync_loads_every_result_of_both_pages_exactly(source):
    result = sync(source)
    expected = sum(recorded_amounts(), Decimal(0))
    assert (result["status"], result["rows"]) == ("imported", len(recorded_amounts()))
    assert Decimal(result["billed"]["USD"]) == expected
    assert Decimal(result["effective"]["USD"]) == expected
    assert total(CostRecord.objects) == expected
    assert result["billing_periods"] == ["2026-09", "2026-10"]


def test_it_asks_from_the_previous_month_and_fetches_both_pages(source, fake_openai):
    sync(source)
    first, second = fake_openai.requests
    assert first["query"]["start_time"] == [str(SINCE)]
    assert first["query"]["group_by"] == ["project_id", "line_item"]
    assert "page" not in first["query"]
    assert second["query"]["page"] == [NEXT_PAGE]
    for request in (first, second):
        assert request["headers"]["Authorization"] == f"Bearer {API_KEY}"
        assert request["headers"]["OpenAI-Organization"] == "org-Q8t2vXb3LmN0pRs7"


def test_a_source_configured_for_one_project_asks_only_for_it(source, fake_openai):
    source.config["project"] = PROJECT
    source.save()
    sync(source)
    assert fake_openai.requests[0]["query"]["project_ids"] == [PROJECT]


def test_each_result_becomes_a_row_for_its_day_project_and_line_item(source):
    sync(source)
    row = CostRecord.objects.get(
        charge_description="ft-gpt-4o-mini-2024-07-18, training"
    )
    assert row.billed_cost == row.effective_cost == row.list_cost == row.contracted_cost
    assert row.billed_cost == Decimal("1234.56789012345")
    assert (row.billing_currency, row.provider_name, row.service_name) == (
        "USD",
        "OpenAI",
        "OpenAI API",
    )
    assert row.service_category == "AI and Machine Learning"
    assert row.billing_account_id == "org-Q8t2vXb3LmN0pRs7"
    assert row.tags == {"openai_project_id": "proj_8HcLp0sYd4Ga2eTqLm5F"}
    assert (row.charge_period_start, row.charge_period_end) == (
        datetime(2026, 9, 7, tzinfo=UTC),
        datetime(2026, 9, 8, tzinfo=UTC),
    )
    assert (row.billing_period_start, row.billing_period_end) == (
        datetime(2026, 9, 1, tzinfo=UTC),
        datetime(2026, 10, 1, tzinfo=UTC),
    )
    assert not row.is_provisional


def test_costs_outside_any_project_carry_no_project_tag(source):
    sync(source)
    row = CostRecord.objects.get(charge_description="web search tool calls")
    assert (row.tags, row.sub_account_id) == ({}, "")


def test_a_tag_rule_allocates_an_openai_projects_costs_to_a_project(source):
    team = Team.objects.create(name="Research", slug="research")
    project = make_project(team, make_user("lead@test.example"), "rag-evals")
    AllocationRule.objects.create(
        project=project, match_on="tag", tag_key="openai_project_id", value=PROJECT
    )
    sync(source)
    allocation = set(CostRecord.objects.values_list("sub_account_id", "project"))
    assert allocation == {
        (PROJECT, project.pk),
        ("proj_8HcLp0sYd4Ga2eTqLm5F", None),
        ("", None),
    }


def test_an_amount_printed_with_float_digits_is_rounded_only_past_11_places(
    source, fake_openai
):
    page = (PAGES / "costs_page_2.json").read_text()
    fake_openai.pages[NEXT_PAGE] = page.replace(
        '"value": 0.98765432101,', '"value": 0.13080438340307526,'
    ).encode()
    sync(source)
    row = CostRecord.objects.get(charge_period_start=datetime(2026, 10, 15, tzinfo=UTC))
    assert row.billed_cost == Decimal("0.13080438340")


def test_a_503_is_retried_and_the_sync_then_succeeds(source, fake_openai):
    fake_openai.fail(503)
    result = sync(source)
    assert result["status"] == "imported"
    assert len(fake_openai.requests) == 3
    assert total(CostRecord.objects) == sum(recorded_amounts(), Decimal(0))


def test_a_429_waits_as_long_as_retry_after_asks(source, fake_openai):
    fake_openai.fail(429, **{"Retry-After": "1"})
    started = time.monotonic()
    assert sync(source)["status"] == "imported"
    assert time.monotonic() - started >= 1


def test_a_persistent_503_fails_the_sync_and_keeps_what_was_loaded(source, fake_openai):
    sync(source)
    loaded = sorted(CostRecord.objects.values_list("pk", "billed_cost"))
    fake_openai.requests.clear()
    fake_openai.fail(503, times=provider_http.RETRIES + 1)
    message = failed_sync(source)
    assert len(fake_openai.requests) == provider_http.RETRIES + 1
    assert "HTTP 503 after 4 retries" in message
    source.refresh_from_db()
    assert "OpenAI still answered HTTP 503" in source.last_error
    # What the provider answered goes to the log, never to the portal.
    assert "The server is overloaded." not in source.last_error
    assert ImportRun.objects.latest("pk").status == ImportRun.Status.FAILED
    assert sorted(CostRecord.objects.values_list("pk", "billed_cost")) == loaded


def test_a_refused_key_fails_at_once_and_is_never_repeated(source, fake_openai):
    wrong_key = "sk-admin-revoked0123456789abcdef0123456789"
    source.credentials = {"api_key": wrong_key}
    source.save()
    message = failed_sync(source)
    assert len(fake_openai.requests) == 1
    source.refresh_from_db()
    run = ImportRun.objects.latest("pk")
    assert "the API key was refused (HTTP 401" in source.last_error
    assert run.status == ImportRun.Status.FAILED
    for text in (message, source.last_error, run.error):
        assert wrong_key not in text
        assert "revoked0123" not in text
    assert not CostRecord.objects.exists()


def test_an_unreachable_api_fails_the_sync_as_a_provider_outage(source, settings):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    source.config["base_url"] = f"http://127.0.0.1:{closed_port}"
    settings.SOURCE_ENDPOINT_ALLOWLIST = [source.config["base_url"]]
    source.save()
    failed_sync(source)
    source.refresh_from_db()
    assert "OpenAI could not be reached" in source.last_error
    assert API_KEY not in source.last_error


def test_a_response_of_another_shape_fails_naming_the_field(source, fake_openai):
    page = (PAGES / "costs_page_2.json").read_text()
    fake_openai.pages[NEXT_PAGE] = page.replace('"value": 0.61803398875, ', "").encode()
    message = failed_sync(source)
    assert (
        "OpenAI /v1/organization/costs page 2: "
        "field data[0].results[1].amount.value is missing"
    ) in message
    assert not CostRecord.objects.exists()


def test_the_sync_task_tries_again_after_a_provider_outage_and_then_loads(
    source, fake_openai
):
    # One whole attempt's requests fail, its HTTP retries included; the task's
    # retry (run at once, as apply() runs retries) then finds the provider back.
    fake_openai.fail(503, times=provider_http.RETRIES + 1)
    result = billing_sync.apply(args=[source.pk])
    assert (result.state, result.result) == ("SUCCESS", ImportRun.Status.IMPORTED)
    runs = ImportRun.objects.order_by("pk").values_list("status", flat=True)
    assert list(runs) == [ImportRun.Status.FAILED, ImportRun.Status.IMPORTED]
    assert total(CostRecord.objects) == sum(recorded_amounts(), Decimal(0))


COMPARED = [
    f.attname
    for f in CostRecord._meta.concrete_fields
    if f.attname not in ("id", "source_id", "import_run_id")
]


def records_of(source_name: str) -> list[tuple]:
    rows = CostRecord.objects.filter(source__name=source_name)
    return sorted(rows.values_list(*COMPARED), key=repr)


def test_the_pages_saved_to_a_file_import_as_a_sync_loads_them(source):
    # A file knows no organisation: so the source names none either.
    source.config.pop("organization")
    source.save()
    sync(source)
    # The same costs in a second source, on purpose.
    code, result = run_import(
        PAGES / "costs_saved.json", source="Saved pages", allow_overlap=True
    )
    assert code == 0, result["error"]
    assert BillingSource.objects.get(name="Saved pages").kind == "openai"
    assert records_of("Saved pages") == records_of(source.name)


def test_a_saved_page_that_says_more_follow_is_refused_as_incomplete():
    code, result = run_import(PAGES / "costs_page_1.json", source="Saved pages")
    assert (code, result["status"]) == (1, "failed")
    assert result["error"] == (
        "costs_page_1.json: field has_more is true, but no page follows in the "
        "file: save every page of the answer"
    )
    assert not CostRecord.objects.exists()


def test_the_last_page_alone_imports_as_one_page(tmp_path):
    page = json.loads((PAGES / "costs_page_2.json").read_text())
    results = sum(len(bucket["results"]) for bucket in page["data"])
    code, result = run_import(
        PAGES / "costs_page_2.json", source="Saved pages", format="openai"
    )
    assert (code, result["rows"]) == (0, results)


def test_an_endpoint_of_another_host_fails_the_sync_before_the_key_is_sent(
    source, fake_openai, settings
):
    settings.SOURCE_ENDPOINT_ALLOWLIST = []  # the fake is a local listener again
    message = failed_sync(source)
    assert fake_openai.requests == []
    assert f"the endpoint {fake_openai.url} is not an address of the provider" in (
        message
    )
    assert API_KEY not in message


def test_an_error_answer_is_logged_but_never_shown(source, fake_openai, caplog):
    fake_openai.fail(404)
    message = failed_sync(source)
    source.refresh_from_db()
    assert "OpenAI refused the request (HTTP 404)" in message
    for text in (message, source.last_error, ImportRun.objects.latest("pk").error):
        assert FakeOpenAI.overloaded not in text
    assert FakeOpenAI.overloaded in caplog.text
