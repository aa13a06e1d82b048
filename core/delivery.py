"""Sending an email once: the sweep that alert emails and the monthly report share.

An email owed to one person is a row, recorded before anything is sent, with a status
(`pending` → `sending` → `sent`, or `given_up`), a claim id, the time of the claim and
a count of attempts. A sender claims a row with one conditional UPDATE whose condition
is "still owed": of two workers racing for the same row, the database lets one update
it and the other finds nothing to claim. The row is marked sent under the same claim
once the mail server has taken the message. A worker that dies after claiming leaves
the row in `sending`; once its lease has run out, the next sweep claims it again.

A mail server that cannot be reached says nothing about the message: the row goes back
to `pending` as it was, however long the outage lasts. An email is given up when the
mail server refused the message itself `MAX_REFUSALS` times, or when it has been owed
longer than `EMAIL_GIVE_UP_AFTER_HOURS`; the admin can make it owed again (`retry`).
"""

import logging
import smtplib
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

from django.conf import settings
from django.db.models import F, Model, Q, QuerySet, Value
from django.db.models.functions import Coalesce, Concat, Now, NullIf
from django.utils import timezone

logger = logging.getLogger(__name__)

PENDING, SENDING, SENT, GIVEN_UP = "pending", "sending", "sent", "given_up"

# Longer than any send can take (EMAIL_TIMEOUT bounds a hung mail server well under
# it): a claim older than this belongs to a worker that died.
LEASE = timedelta(minutes=10)
# A mail server that refuses one message must not be asked again every sweep for a
# day: after this many refusals of the message itself, it is given up.
MAX_REFUSALS = 12
# Unreachable this many times in one sweep, the mail server is left alone until the
# next sweep: a hanging server then holds a worker for this many EMAIL_TIMEOUTs, not
# one per email owed.
BREAKER_FAILURES = 3
# The mail server answered, and said no to this message (its sender, a recipient or
# its content). Every other OSError (smtplib's errors are OSErrors) means the server
# was not reached, did not answer in time, or dropped the connection.
MESSAGE_REFUSALS = (
    smtplib.SMTPRecipientsRefused,
    smtplib.SMTPSenderRefused,
    smtplib.SMTPDataError,
)

M = TypeVar("M", bound=Model)


def owed(rows: QuerySet[M]) -> QuerySet[M]:
    """The rows still to send: pending, or claimed by a worker whose lease ran out."""
    # The database's clock, read at each claim: workers' clocks and a long sweep's
    # start time do not decide when a claim has expired.
    expired = Q(status=SENDING, claimed_at__lt=Now() - LEASE)
    return rows.filter(Q(status=PENDING) | expired)


def claim(owed_rows: QuerySet[M]) -> uuid.UUID | None:
    """Claim what `owed_rows` still holds; None when another worker was first.

    Filter `owed_rows` on the row's own columns only: a condition through a join
    becomes a subquery that PostgreSQL does not check again once the first claimant
    commits, and the second would claim the row too."""
    claim_id = uuid.uuid4()
    claimed = owed_rows.update(
        status=SENDING, claim=claim_id, claimed_at=Now(), attempts=F("attempts") + 1
    )
    return claim_id if claimed else None


def settle(rows: QuerySet[M], claim_id: uuid.UUID, *, sent: bool) -> None:
    """Mark a claim's rows sent, or hand them back for the next sweep."""
    mine = rows.filter(claim=claim_id, status=SENDING)
    if sent:
        mine.update(status=SENT, sent_at=timezone.now())
    else:
        mine.update(status=PENDING, claim=None, claimed_at=None)


def give_up_stale(owed_rows: QuerySet[M], *, due_after: timedelta) -> int:
    """Give up what has been owed longer than EMAIL_GIVE_UP_AFTER_HOURS past the
    time it was due (`due_after` its recording: a digest waits for its hour); the
    number given up. Only owed rows: a live claim is a send in progress.

    The worker's clock, not the database's as for the lease: an age in hours does
    not mind a few seconds of skew between workers."""
    hours = settings.EMAIL_GIVE_UP_AFTER_HOURS
    cutoff = timezone.now() - due_after - timedelta(hours=hours)
    return owed_rows.filter(owed_since__lt=cutoff).update(
        status=GIVEN_UP,
        claim=None,
        claimed_at=None,
        given_up_reason=Concat(
            Value(f"Not sent within {hours} hours of being owed. Last error: "),
            Coalesce(NullIf(F("last_error"), Value("")), Value("none, never tried")),
        ),
    )


def retry(rows: QuerySet[M]) -> int:
    """Make given-up rows owed again, as if recorded now; the number made owed."""
    return rows.filter(status=GIVEN_UP).update(
        status=PENDING,
        owed_since=timezone.now(),
        refusals=0,
        given_up_reason="",
    )


class Sweep:
    """One pass of a sender over what it owes: claims, sends, settles each email, and
    stops trying once the mail server has been unreachable BREAKER_FAILURES times;
    what it did not try stays owed, untouched, for the next sweep. Starting a sweep
    gives up first what has been owed too long."""

    def __init__(self, rows: QuerySet[M], *, due_after: timedelta = timedelta(0)):
        self.rows = rows
        self.sent = 0
        self.unreachable = 0
        give_up_stale(owed(rows), due_after=due_after)

    @property
    def stopped(self) -> bool:
        return self.unreachable >= BREAKER_FAILURES

    def deliver(
        self, owed_rows: QuerySet[M], send: Callable[[uuid.UUID], None], name: str
    ) -> None:
        """Claim `owed_rows` and call `send` with the claim id; `name` is for logs."""
        if self.stopped:
            return
        claim_id = claim(owed_rows)
        if claim_id is None:
            return  # another worker has it
        try:
            send(claim_id)
        except Exception as error:
            self._failed(claim_id, error, name)
            return
        settle(self.rows, claim_id, sent=True)
        self.sent += 1

    def _failed(self, claim_id: uuid.UUID, error: Exception, name: str) -> None:
        mine = self.rows.filter(claim=claim_id, status=SENDING)
        mine.update(last_error=f"{type(error).__name__}: {error}"[:500])
        if isinstance(error, OSError) and not isinstance(error, MESSAGE_REFUSALS):
            self.unreachable += 1
            logger.warning("%s: server unreachable (%s); stays owed", name, error)
        else:
            mine.update(refusals=F("refusals") + 1)
            mine.filter(refusals__gte=MAX_REFUSALS).update(
                status=GIVEN_UP,
                claim=None,
                claimed_at=None,
                given_up_reason=Concat(
                    Value(f"Refused or failed {MAX_REFUSALS} times. Last error: "),
                    F("last_error"),
                ),
            )
            logger.exception(
                "%s refused or failed; given up at %s refusals",
                name,
                MAX_REFUSALS,
                exc_info=error,
            )
        settle(self.rows, claim_id, sent=False)
        if self.stopped:
            logger.warning(
                "Server unreachable %s times: sweep stopped", BREAKER_FAILURES
            )
