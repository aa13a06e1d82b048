"""A session ends after SESSION_IDLE_TIMEOUT minutes without a request, however long
it has been in use."""

from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse

from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

START = datetime(2026, 3, 2, 9, tzinfo=UTC)


def test_a_session_lasts_while_used_and_ends_when_idle(
    client, world, settings, time_machine
):
    time_machine.move_to(START, tick=False)
    idle = timedelta(minutes=settings.SESSION_IDLE_TIMEOUT)
    client.post(reverse("login"), {"username": world.lead.email, "password": PASSWORD})

    for step in range(1, 4):  # three idle periods in all, each request renews it
        time_machine.move_to(START + step * (idle - timedelta(minutes=1)), tick=False)
        assert client.get(reverse("team_list")).status_code == 200

    time_machine.shift(idle + timedelta(seconds=1))
    response = client.get(reverse("team_list"))

    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))
