"""The billing API: cost records and daily costs with the explorer's filters and
scope, cursor pages, a page size over the limit refused; billing sources without
their secrets; imports and invoices."""

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.urls import reverse

from core.pagination import MAX_PAGE_SIZE
from tests.conftest import make_cost_record, make_run, make_spend

pytestmark = pytest.mark.django_db

JANUARY = {"start": "2026-01-01", "end": "2026-01-31"}


@pytest.fixture(autouse=True)
def end_of_january(time_machine):
    time_machine.move_to(datetime(2026, 1, 31, 12, tzinfo=UTC), tick=False)


def records(client, **params) -> list[dict]:
    response = client.get(reverse("api_cost_record_list"), params)
    assert response.status_code == 200, response.json()
    return response.json()["results"]


def amounts(rows: list[dict]) -> list[Decimal]:
    return sorted(Decimal(row["effective_cost"]) for row in rows)


def test_each_filter_keeps_only_its_cost_records(client, world):
    other_run = make_run(world.project, name="Eval run", external_id="eval")
    day = date(2026, 1, 10)
    make_cost_record(day, "1", project=world.project, training_run=world.run)
    make_cost_record(day, "2", project=world.project, training_run=other_run)
    make_cost_record(day, "4", project=world.project, provider_name="Lambda")
    make_cost_record(day, "8", project=world.project, service_name="Amazon S3")
    make_cost_record(day, "16", project=world.project, charge_category="Tax")
    make_cost_record(day, "32", project=world.other_project)
    make_cost_record(day, "64", project=None)
    make_cost_record(date(2025, 12, 31), "128", project=world.project)
    client.force_login(world.finance)
    by = {
        "project": (world.project.slug, ["1", "2", "4", "8", "16"]),
        "team": (world.other_team.slug, ["32"]),
        "run": (str(world.run.pk), ["1"]),
        "provider": ("Lambda", ["4"]),
        "service": ("Amazon S3", ["8"]),
        "charge_category": ("Tax", ["16"]),
    }
    for name, (value, expected) in by.items():
        found = amounts(records(client, **JANUARY, **{name: value}))
        assert found == [Decimal(amount) for amount in expected], name
    assert amounts(records(client, start="2025-12-01", end="2025-12-31")) == [
        Decimal("128")
    ]
    assert amounts(records(client, project="(none)", **JANUARY)) == [Decimal("64")]


def test_a_member_gets_only_their_teams_cost_records(client, world):
    day = date(2026, 1, 10)
    make_cost_record(day, "1", project=world.project)
    make_cost_record(day, "2", project=world.other_project)
    make_cost_record(day, "4", project=None)
    client.force_login(world.member)
    rows = records(client, **JANUARY)
    assert [(row["project"], row["effective_cost"]) for row in rows] == [
        (world.project.slug, "1.00000000000")
    ]


def test_a_filter_naming_what_the_caller_cannot_see_is_a_400_naming_it(client, world):
    client.force_login(world.member)
    url = reverse("api_cost_record_list")
    hidden = client.get(url, {"project": world.other_project.slug})
    assert hidden.status_code == 400
    assert hidden.json() == {
        "project": [f"No project “{world.other_project.slug}” that you can see."]
    }
    unallocated = client.get(url, {"team": "(none)"})
    assert unallocated.status_code == 400
    assert "finance and admins only" in unallocated.json()["team"][0]
    backwards = client.get(url, {"start": "2026-01-31", "end": "2026-01-01"})
    assert backwards.status_code == 400
    assert backwards.json() == {
        "non_field_errors": ["The range ends before it starts."]
    }
    assert client.get(url, {"start": "January"}).json()["start"] == [
        "Enter a valid date."
    ]


def test_cursor_pages_walk_every_record_once(client, world):
    for day in range(1, 8):
        make_cost_record(date(2026, 1, day), str(day), project=world.project)
    client.force_login(world.lead)
    seen, url, params = [], reverse("api_cost_record_list"), {**JANUARY, "page_size": 3}
    while url:
        page = client.get(url, params).json()
        assert len(page["results"]) <= 3
        seen += [row["effective_cost"] for row in page["results"]]
        assert page["next"] is None or "cursor=" in page["next"]
        url, params = page["next"], {}
    assert [Decimal(amount) for amount in seen] == [Decimal(n) for n in range(1, 8)]


@pytest.mark.parametrize("name", ["api_cost_record_list", "api_project_list"])
def test_a_page_size_over_the_limit_is_refused_with_the_limit(client, world, name):
    client.force_login(world.finance)
    response = client.get(reverse(name), {"page_size": MAX_PAGE_SIZE + 1})
    assert response.status_code == 400
    assert response.json() == {
        "page_size": [f"Give a page size from 1 to {MAX_PAGE_SIZE}; got '501'."]
    }
    at_the_limit = client.get(reverse(name), {"page_size": MAX_PAGE_SIZE})
    assert at_the_limit.status_code == 200


def test_daily_costs_follow_the_filters_and_refuse_what_only_records_know(
    client, world
):
    make_spend(world.project, date(2026, 1, 10), "3", provider_name="Lambda")
    make_spend(world.project, date(2026, 1, 11), "5")
    make_spend(world.other_project, date(2026, 1, 11), "7")
    client.force_login(world.lead)
    url = reverse("api_daily_cost_list")
    rows = client.get(url, JANUARY).json()["results"]
    assert [(row["date"], row["project"], row["effective_cost"]) for row in rows] == [
        ("2026-01-10", world.project.slug, "3.00000000000"),
        ("2026-01-11", world.project.slug, "5.00000000000"),
    ]
    lambda_only = client.get(url, {**JANUARY, "provider": "Lambda"}).json()
    assert [row["date"] for row in lambda_only["results"]] == ["2026-01-10"]
    refused = client.get(url, {"region": "us-east-1"})
    assert refused.status_code == 400
    assert list(refused.json()) == ["region"]


def test_a_billing_source_never_shows_its_configuration_or_credentials(client, world):
    world.source.config = {"bucket": "acme-billing", "sas_token": "sv=secret-config"}
    world.source.credentials = {"api_key": "sk-secret-credential"}
    world.source.save()
    client.force_login(world.finance)
    listed = client.get(reverse("api_source_list")).content.decode()
    one = client.get(reverse("api_source_detail", args=[world.source.pk]))
    for text in (listed, one.content.decode()):
        assert world.source.name in text
        for secret in ("acme-billing", "secret-config", "sk-secret", "credential"):
            assert secret not in text
    assert "config" not in one.json()


def test_imports_are_listed_newest_first_and_by_source(client, world):
    client.force_login(world.finance)
    url = reverse("api_import_list")
    rows = client.get(url, {"source": world.source.pk}).json()["results"]
    assert [row["id"] for row in rows] == [world.import_run.pk]
    assert client.get(url, {"source": world.source.pk + 1}).json()["results"] == []


def test_an_invoice_comes_with_its_lines_and_total(client, world):
    client.force_login(world.member)
    listed = client.get(reverse("api_invoice_list")).json()["results"]
    assert [(row["invoice_number"], row["total"]) for row in listed] == [
        ("INV-1", "1234.5000")
    ]
    one = client.get(reverse("api_invoice_detail", args=[world.invoice.pk])).json()
    assert one["lines"] == [
        {
            "description": "H100 hours",
            "gpu_type": "",
            "gpu_hours": None,
            "rate": None,
            "amount": "1234.5000",
        }
    ]
