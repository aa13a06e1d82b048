"""The REST API for scripts: a run's progress in, alerts out."""

from decimal import Decimal

import pytest
from django.urls import reverse

from projects.tokens import api_token_create

pytestmark = pytest.mark.django_db


def progress_url(world) -> str:
    return reverse(
        "api_run_progress",
        kwargs={"slug": world.project.slug, "external_id": world.run.external_id},
    )


def test_a_training_script_reports_progress_with_the_leads_token(client, world):
    world.run.progress_unit = "tokens"
    world.run.units_planned = Decimal("1000000")
    world.run.save()
    _, key = api_token_create(user=world.lead, name="trainer", expires_in_days=30)
    response = client.post(
        progress_url(world),
        {"status": "running", "units_done": "250000"},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )
    assert response.status_code == 200
    assert response.json() == {
        "external_id": "sft-run",
        "status": "running",
        "progress_unit": "tokens",
        "units_planned": "1000000.00",
        "units_done": "250000.00",
    }
    world.run.refresh_from_db()
    assert world.run.units_done == Decimal("250000")


def test_progress_is_refused_with_the_reason(client, world):
    client.force_login(world.lead)
    response = client.post(
        progress_url(world), {"units_done": "-5"}, content_type="application/json"
    )
    assert response.status_code == 400
    assert "units_done" in response.json()


def test_a_member_cannot_report_progress(client, world):
    client.force_login(world.member)
    response = client.post(
        progress_url(world), {"status": "failed"}, content_type="application/json"
    )
    assert response.status_code == 403


def test_the_alert_list_shows_the_callers_alerts(client, world):
    client.force_login(world.member)
    body = client.get(reverse("api_alert_list")).json()
    assert [a["subject"] for a in body["results"]] == [world.alert.subject]
    assert body["results"][0]["project"] == world.project.slug
    client.force_login(world.outsider)
    assert client.get(reverse("api_alert_list")).json()["results"] == []


def test_an_outsider_cannot_tell_a_hidden_run_exists(client, world):
    client.force_login(world.outsider)
    response = client.post(
        progress_url(world), {"status": "failed"}, content_type="application/json"
    )
    assert response.status_code == 404


def test_progress_of_a_run_without_a_unit_is_refused_not_a_crash(client, world):
    client.force_login(world.lead)
    response = client.post(
        progress_url(world), {"units_done": "10"}, content_type="application/json"
    )
    assert response.status_code == 400
    assert "progress_unit" in response.json()
