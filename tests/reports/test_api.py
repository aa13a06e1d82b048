"""The monthly report's JSON through the API: what `/reports/YYYY-MM/report.json`
gives the same person, their teams' spend or the organisation's."""

from datetime import UTC, date, datetime

import pytest
from django.urls import reverse

from tests.conftest import make_spend

pytestmark = pytest.mark.django_db

JANUARY = date(2026, 1, 1)


@pytest.fixture(autouse=True)
def february(time_machine):
    time_machine.move_to(datetime(2026, 2, 10, 12, tzinfo=UTC), tick=False)


@pytest.mark.parametrize("persona", ["lead", "outsider", "finance"])
def test_the_api_gives_the_report_the_portal_gives_the_same_person(
    client, world, persona
):
    make_spend(world.project, date(2026, 1, 5), "120.50")
    make_spend(world.other_project, date(2026, 1, 6), "80.25")
    make_spend(None, date(2026, 1, 7), "9.75")
    client.force_login(getattr(world, persona))
    portal = client.get(reverse("report_json", args=[JANUARY]))
    api = client.get(reverse("api_monthly_report", args=[JANUARY]))
    assert api.status_code == portal.status_code == 200
    assert api.json() == portal.json()


def test_the_report_of_a_lead_holds_only_their_teams_projects(client, world):
    make_spend(world.project, date(2026, 1, 5), "120.50")
    make_spend(world.other_project, date(2026, 1, 6), "80.25")
    client.force_login(world.lead)
    text = client.get(reverse("api_monthly_report", args=[JANUARY])).content.decode()
    assert world.project.slug in text
    assert world.other_project.slug not in text


def test_a_month_not_begun_has_no_report(client, world):
    client.force_login(world.finance)
    url = reverse("api_monthly_report", args=[date(2026, 3, 1)])
    assert client.get(url).status_code == 404
