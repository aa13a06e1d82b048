"""Alert emails after a mail outage: Django's SMTP backend against a real mail server
on loopback that is down (its port closed), hangs, refuses a recipient, or comes back.
Each sweep runs five minutes after the last, as the schedule runs it, in frozen time."""

import time
from datetime import UTC, date, datetime, timedelta

import pytest
import time_machine
from django.urls import reverse

from budgets.alerts import alerts_evaluate
from budgets.models import AlertKind, AlertRule, Notification
from budgets.notifications import (
    MAX_REFUSALS,
    digests_send,
    notifications_send_pending,
)
from core import delivery
from core.delivery import BREAKER_FAILURES
from tests.conftest import make_budget, make_project, make_spend
from tests.smtp_servers import HangingServer

pytestmark = pytest.mark.django_db

DECIDED = datetime(2026, 1, 20, 9, tzinfo=UTC)
SWEEP = timedelta(minutes=5)


@pytest.fixture
def owed(world):
    """Six alert emails owed: three projects over 80% of January's plan, each told to
    its lead and to finance, who watches the team; the mail server not yet asked."""
    world.alert.delete()
    world.finance.watched_teams.add(world.team)
    for kind in AlertKind.values:
        if kind != AlertKind.BUDGET_USED:
            AlertRule.objects.create(kind=kind, is_enabled=False)
    for index in range(3):
        project = make_project(world.team, world.lead, f"busy-{index}")
        make_budget(project, {date(2026, 1, 1): "1000"})
        make_spend(project, date(2026, 1, 19), "900")
    with time_machine.travel(DECIDED, tick=False):
        alerts_evaluate(send_later=False)
    assert Notification.objects.count() == 6
    return Notification.objects.all()


def sweep_at(when: datetime) -> int:
    with time_machine.travel(when, tick=False):
        return notifications_send_pending()


def statuses() -> set[str]:
    return set(Notification.objects.values_list("status", flat=True))


def test_an_outage_longer_than_twelve_sweeps_then_recovery_sends_each_email_once(
    owed, mail_server
):
    for number in range(1, 16):  # an hour and a quarter of refused connections
        assert sweep_at(DECIDED + number * SWEEP) == 0
    assert statuses() == {"pending"}
    assert set(owed.values_list("refusals", flat=True)) == {0}
    assert "ConnectionRefusedError" in owed.first().last_error

    mail_server.start()
    assert sweep_at(DECIDED + 16 * SWEEP) == 6
    assert sweep_at(DECIDED + 17 * SWEEP) == 0
    assert statuses() == {"sent"}
    delivered = sorted((m["To"], m["Subject"]) for m in mail_server.received)
    assert len(delivered) == 6
    assert len(set(delivered)) == 6  # three alerts, each to the lead and to finance
    assert sweep_at(DECIDED + timedelta(days=7)) == 0
    assert statuses() == {"sent"}  # what was sent is never given up, nor retried


def test_an_email_owed_longer_than_the_give_up_age_is_given_up_with_its_reason(
    owed, mail_server, settings
):
    settings.EMAIL_GIVE_UP_AFTER_HOURS = 6
    sweep_at(DECIDED + SWEEP)
    sweep_at(DECIDED + timedelta(hours=6) - SWEEP)
    assert statuses() == {"pending"}

    sweep_at(DECIDED + timedelta(hours=6, minutes=1))
    assert statuses() == {"given_up"}
    # Each sweep tried the first three, then its breaker left the rest untried.
    tried, untried = owed.order_by("pk")[:3], owed.order_by("pk")[3:]
    for row in tried:
        assert row.given_up_reason.startswith(
            "Not sent within 6 hours of being owed. Last error: ConnectionRefusedError"
        )
    assert {row.given_up_reason for row in untried} == {
        "Not sent within 6 hours of being owed. Last error: none, never tried"
    }

    mail_server.start()  # too late: nothing goes unless the admin retries
    assert sweep_at(DECIDED + timedelta(hours=7)) == 0
    assert mail_server.received == []


def test_a_message_the_mail_server_refuses_counts_and_is_given_up_after_its_refusals(
    owed, mail_server
):
    mail_server.refused = {"lead@test.example"}
    mail_server.start()
    assert sweep_at(DECIDED + SWEEP) == 3  # finance's three
    for number in range(2, MAX_REFUSALS + 3):
        assert sweep_at(DECIDED + number * SWEEP) == 0
    refused = owed.filter(user__email="lead@test.example")
    assert set(refused.values_list("status", "refusals", "attempts")) == {
        ("given_up", MAX_REFUSALS, MAX_REFUSALS)
    }
    reason = refused.first().given_up_reason
    assert reason.startswith(f"Refused or failed {MAX_REFUSALS} times. Last error: ")
    assert "SMTPRecipientsRefused" in reason and "550" in reason
    assert [m["To"] for m in mail_server.received] == ["finance@test.example"] * 3


def test_a_hanging_mail_server_stops_the_sweep_after_three_timeouts(owed, settings):
    hanging = HangingServer()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", hanging.port
    settings.EMAIL_TIMEOUT = 1
    started = time.monotonic()
    try:
        assert sweep_at(DECIDED + SWEEP) == 0
    finally:
        hanging.close()
    took = time.monotonic() - started
    assert len(hanging.connections) == BREAKER_FAILURES
    assert BREAKER_FAILURES <= took < BREAKER_FAILURES + 2  # not one timeout per email
    tried = owed.filter(attempts=1)
    assert tried.count() == BREAKER_FAILURES
    assert "SMTPServerDisconnected" in tried.first().last_error
    untouched = owed.filter(attempts=0, last_error="", claim=None)
    assert untouched.count() == 6 - BREAKER_FAILURES
    assert statuses() == {"pending"}


def test_an_email_being_sent_when_it_comes_of_age_is_sent_not_given_up(
    owed, mail_server
):
    """A live claim is a send in progress: giving it up under the sender would let
    an admin's retry send it a second time."""
    first = owed.order_by("pk").first()
    claim = delivery.claim(delivery.owed(owed.filter(pk=first.pk)))
    assert claim is not None
    sweep_at(DECIDED + timedelta(days=2))
    delivery.settle(Notification.objects.all(), claim, sent=True)
    first.refresh_from_db()
    assert first.status == "sent"
    assert set(owed.exclude(pk=first.pk).values_list("status", flat=True)) == {
        "given_up"
    }


def test_a_digest_whose_hour_finds_the_mail_server_down_goes_at_the_next_digest(
    world, mail_server
):
    """A digest is due at 07:00, up to a day after its alert fired: the age it may be
    owed counts from then, so the next day's digest still carries it."""
    Notification.objects.create(
        alert=world.alert, user=world.lead, channel=Notification.Channel.DIGEST
    )
    Notification.objects.update(owed_since=datetime(2026, 1, 20, 7, 5, tzinfo=UTC))
    with time_machine.travel(datetime(2026, 1, 21, 7, tzinfo=UTC), tick=False):
        assert digests_send() == 0
    mail_server.start()
    with time_machine.travel(datetime(2026, 1, 22, 7, tzinfo=UTC), tick=False):
        assert digests_send() == 1
    assert [m["To"] for m in mail_server.received] == ["lead@test.example"]


def test_the_admin_retries_given_up_emails_and_the_next_sweep_sends_them_once(
    client, world, owed, mail_server
):
    sweep_at(DECIDED + timedelta(days=2))
    assert statuses() == {"given_up"}
    first = owed.order_by("pk").first()
    client.force_login(world.admin)
    retried_at = DECIDED + timedelta(days=2, hours=1)
    with time_machine.travel(retried_at, tick=False):
        response = client.post(
            reverse("admin:budgets_notification_changelist"),
            {"action": "retry_given_up", "_selected_action": [first.pk]},
            follow=True,
        )
    assert "1 given-up email owed again" in response.content.decode()
    first.refresh_from_db()
    assert (first.status, first.owed_since, first.given_up_reason) == (
        "pending",
        retried_at,
        "",
    )
    mail_server.start()
    assert sweep_at(retried_at + SWEEP) == 1
    assert sweep_at(retried_at + 2 * SWEEP) == 0
    assert [m["To"] for m in mail_server.received] == [first.user.email]
    assert set(owed.exclude(pk=first.pk).values_list("status", flat=True)) == {
        "given_up"
    }
