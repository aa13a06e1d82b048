"""Sending an email once: the claim that alert emails and the monthly report share.

An email owed to one person is a row, recorded before anything is sent, with a status
(`pending` → `sending` → `sent`), a claim id, the time of the claim and a count of
attempts. A sender claims a row with one conditional UPDATE whose condition is "still
owed": of two workers racing for the same row, the database lets one update it and
the other finds nothing to claim. The row is marked sent under the same claim once the
mail server has taken the message. A worker that dies after claiming leaves the row in
`sending`; once its lease has run out, the next sweep claims it again.
"""

import uuid
from datetime import timedelta
from typing import TypeVar

from django.db.models import F, Model, Q, QuerySet
from django.db.models.functions import Now
from django.utils import timezone

PENDING, SENDING, SENT = "pending", "sending", "sent"

# Longer than any send can take (EMAIL_TIMEOUT bounds a hung mail server well under
# it): a claim older than this belongs to a worker that died.
LEASE = timedelta(minutes=10)
# A mail server that refuses one address must not be retried every sweep forever:
# after this many attempts an email stays owed, visible in admin, untried.
MAX_ATTEMPTS = 12

M = TypeVar("M", bound=Model)


def owed(rows: QuerySet[M]) -> QuerySet[M]:
    """The rows still to send: pending, or claimed by a worker whose lease ran out."""
    # The database's clock, read at each claim: workers' clocks and a long sweep's
    # start time do not decide when a claim has expired.
    expired = Q(status=SENDING, claimed_at__lt=Now() - LEASE)
    return rows.filter(Q(status=PENDING) | expired, attempts__lt=MAX_ATTEMPTS)


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
