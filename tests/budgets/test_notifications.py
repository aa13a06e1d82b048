"""Alert emails are claimed once: two real claimants race for the same owed email.

Each claimant is a thread with its own database connection (Django opens one per
thread), so the two claims are two PostgreSQL sessions. A barrier holds each of them
just before its claiming UPDATE until both have read what is owed: both saw the email
pending, and only the claim's own condition can keep the second from sending it.
"""

import threading
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
import time_machine
from django.core import mail
from django.db import connection

from budgets.models import Notification
from budgets.notifications import digests_send, notifications_send_pending


def claim_together(barrier: threading.Barrier):
    """A database execute wrapper: the first UPDATE of notifications waits for the
    other claimant to reach its own."""
    waiting = {"first": True}

    def wrapper(execute, sql, params, many, context):
        if waiting["first"] and sql.startswith('UPDATE "budgets_notification"'):
            waiting["first"] = False
            barrier.wait(timeout=30)
        return execute(sql, params, many, context)

    return wrapper


def race(sweep: Callable[[], int]) -> list[int]:
    """Run `sweep` in two threads at once; what each returned."""
    barrier = threading.Barrier(2)
    results: list[int] = []
    errors: list[BaseException] = []

    def claimant() -> None:
        try:
            with connection.execute_wrapper(claim_together(barrier)):
                results.append(sweep())
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=claimant) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    return sorted(results)


@pytest.fixture
def frozen():
    with time_machine.travel(datetime(2026, 1, 20, 10, tzinfo=UTC), tick=False):
        yield


@pytest.mark.parametrize(
    ("channel", "sweep"),
    [
        (Notification.Channel.IMMEDIATE, notifications_send_pending),
        (Notification.Channel.DIGEST, digests_send),
    ],
    ids=["immediate", "digest"],
)
def test_two_workers_claiming_the_same_owed_email_at_once_send_it_once(
    transactional_db, world, frozen, channel, sweep
):
    notification = Notification.objects.create(
        alert=world.alert, user=world.lead, channel=channel
    )
    assert race(sweep) == [0, 1]
    assert [message.to for message in mail.outbox] == [[world.lead.email]]
    notification.refresh_from_db()
    assert (notification.status, notification.attempts) == (
        Notification.Status.SENT,
        1,
    )
