"""The Anthropic cost report fetcher, against a local fake of the Admin API that serves
two recorded pages (tests/data/anthropic/), checks the key, the version header and the
query, and records every request it receives."""

import io
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import time_machine
from django.core.management import call_command
from django.core.management.base import CommandError

from billing.importers import http as provider_http
from billing.models import BillingSource, CostRecord, ImportRun

pytestmark = pytest.mark.django_db

PAGES = Path(__file__).resolve().parents[1] / "data" / "anthropic"
API_KEY = "sk-ant-admin01-tests0nlyQm9vZ2xlLWlzLW5vdC1hLWtleQ-AbCdEfAA"
NEXT_PAGE = "page_MjAyNi0xMC0wMlQwMDowMDowMFo="
NOW = datetime(2026, 10, 15, 12, tzinfo=UTC)
# billing_sync asks from the first day of the previous month.
SINCE = "2026-09-01T00:00:00Z"
WORKSPACE = "wrkspc_01JwQvzr7rXLA5AGx3HKfFUJ"


@dataclass
class FakeAnthropic:
    url: str = ""
    pages: dict[str | None, bytes] = field(
        default_factory=lambda: {
            None: (PAGES / "cost_report_page_1.json").read_bytes(),
            NEXT_PAGE: (PAGES / "cost_report_page_2.json").read_bytes(),
        }
    )
    # Statuses to answer, in order, before the recorded pages are served again.
    failures: list[int] = field(default_factory=list)
    requests: list[dict] = field(default_factory=list)


class AnthropicHandler(BaseHTTPRequestHandler):
    server: "FakeServer"

    def do_GET(self) -> None:
        api = self.server.api
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        api.requests.append({"path": url.path, "query": query, "headers": self.headers})
        if self.headers["x-api-key"] != API_KEY:
            return self.error(401, "authentication_error", "invalid x-api-key")
        if self.headers["anthropic-version"] != "2023-06-01":
            return self.error(400, "invalid_request_error", "bad anthropic-version")
        if api.failures:
            return self.error(api.failures.pop(0), "api_error", "Internal server error")
        if url.path != "/v1/organizations/cost_report":
            return self.error(404, "not_found_error", "Not found")
        if problem := self.query_problem(query):
            return self.error(400, "invalid_request_error", problem)
        self.answer(200, api.pages[query.get("page", [None])[0]])

    @staticmethod
    def query_problem(query: dict[str, list[str]]) -> str:
        expected = {
            "starting_at": [SINCE],
            "bucket_width": ["1d"],
            "group_by[]": ["workspace_id", "description"],
        }
        wrong = [name for name, value in expected.items() if query.get(name) != value]
        if not 1 <= int(query.get("limit", ["7"])[0]) <= 31:
            wrong.append("limit")
        if query.get("page", [None])[0] not in (None, NEXT_PAGE):
            wrong.append("page")
        return f"invalid query: {', '.join(wrong)}" if wrong else ""

    def error(self, status: int, kind: str, message: str) -> None:
        body = {"type": "error", "error": {"type": kind, "message": message}}
        self.answer(status, json.dumps(body).encode())

    def answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test asserts on `requests` instead."""


class FakeServer(ThreadingHTTPServer):
    api: FakeAnthropic


@pytest.fixture
def fake_anthropic(monkeypatch) -> Iterator[FakeAnthropic]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    # Retries wait milliseconds instead of seconds.
    monkeypatch.setattr(provider_http, "BACKOFF_FACTOR", 0.001)
    server = FakeServer(("127.0.0.1", 0), AnthropicHandler)
    server.api = FakeAnthropic(url=f"http://127.0.0.1:{server.server_port}")
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield server.api
    finally:
        server.shutdown()
        server.server_close()


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


def sync(source: BillingSource) -> dict:
    out = io.StringIO()
    call_command("billing_sync", "--source", source.name, json=True, stdout=out)
    return json.loads(out.getvalue())["sources"][0]


def failed_sync(source: BillingSource) -> str:
    with pytest.raises(CommandError) as failure:
        sync(source)
    return str(failure.value)


def recorded_cents() -> list[Decimal]:
    cents = []
    for name in ("cost_report_page_1.json", "cost_report_page_2.json"):
        page = json.loads((PAGES / name).read_text(), parse_float=Decimal)
        for bucket in page["data"]:
            cents += [Decimal(result["amount"]) for result in bucket["results"]]
    return cents


def stored_billed() -> Decimal:
    return sum(CostRecord.objects.values_list("billed_cost", flat=True), Decimal(0))


def test_a_sync_loads_both_pages_in_dollars_exactly(source):
    result = sync(source)
    expected = sum(recorded_cents(), Decimal(0)) / 100
    assert (result["status"], result["rows"]) == ("imported", len(recorded_cents()))
    assert Decimal(result["billed"]["USD"]) == expected
    assert Decimal(result["effective"]["USD"]) == expected
    assert stored_billed() == expected
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
    fake_anthropic.failures = [500, 503]
    assert sync(source)["status"] == "imported"
    assert len(fake_anthropic.requests) == 4
    assert stored_billed() == sum(recorded_cents(), Decimal(0)) / 100


def test_a_persistent_503_fails_the_sync_and_keeps_what_was_loaded(
    source, fake_anthropic
):
    sync(source)
    loaded = sorted(CostRecord.objects.values_list("pk", "billed_cost"))
    fake_anthropic.requests.clear()
    fake_anthropic.failures = [503] * (provider_http.RETRIES + 1)
    failed_sync(source)
    assert len(fake_anthropic.requests) == provider_http.RETRIES + 1
    source.refresh_from_db()
    assert "Anthropic still answered HTTP 503 after 4 retries" in source.last_error
    assert "Internal server error" in source.last_error
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
    assert "the API key was refused (HTTP 401: invalid x-api-key)" in message
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
