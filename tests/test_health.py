"""/healthz: what an operator monitors (README, Operations)."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import connection

from billing.models import ImportRun
from core.models import BEAT, Heartbeat, UnsentTask
from core.tasks import beat_heartbeat

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def frozen():
    with time_machine.travel(NOW, tick=False):
        yield


def test_all_is_well_when_beat_ran_a_minute_ago_and_no_run_is_stuck(client):
    beat_heartbeat.apply()
    live = NOW - timedelta(minutes=50)  # within the time limit
    ImportRun.objects.create(source_name="live", attempted_at=live)
    with time_machine.travel(NOW + timedelta(seconds=61), tick=False):
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "database": "ok",
        "broker": "ok",
        "beat_age_seconds": 61,
        "stuck_runs": 0,
        "queued_runs": 0,
        "unsent_tasks": 0,
    }


def test_a_down_broker_a_silent_beat_and_stuck_runs_are_reported(client, queue_down):
    Heartbeat.objects.create(name=BEAT, beat_at=NOW - timedelta(minutes=4))
    ImportRun.objects.create(
        source_name="dead", attempted_at=NOW - timedelta(hours=1, seconds=1)
    )
    ImportRun.objects.create(source_name="waits", status=ImportRun.Status.QUEUED)
    UnsentTask.objects.create(task="budgets.tasks.notifications_send")

    response = client.get("/healthz")

    assert response.status_code == 200  # the portal still serves
    body = response.json()
    assert body["broker"] == "down"  # the error's text is for the log
    assert body["status"] == "degraded"
    assert (
        body["beat_age_seconds"],
        body["stuck_runs"],
        body["queued_runs"],
        body["unsent_tasks"],
    ) == (240, 1, 1, 1)


def test_a_beat_that_never_ran_is_reported_as_such(client):
    body = client.get("/healthz").json()
    assert (body["status"], body["beat_age_seconds"]) == ("degraded", None)


def test_it_answers_503_when_the_database_is_down(client, transactional_db):
    settings = connection.settings_dict
    port = settings["PORT"]
    connection.close()
    settings["PORT"] = "1"  # nothing listens there
    try:
        response = client.get("/healthz")
    finally:
        connection.close()
        settings["PORT"] = port
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "down"
    assert body["database"] == "down"  # never the error's hosts and users
