"""Month close, done by a worker: closing reads the month's cost records afresh for
its reconciliation (seconds at 10M records) and renders five files of the report, the
PDF alone taking seconds, so it never runs in a web request.

The request checks at once everything that can refuse a close (`closing.
month_close_check`: who asks, whether the month has ended or is closed, whether its
sources are final or a reason says why), records who asked, when and why
(`MonthCloseRequest`) and queues the close; the report says the close is under way
and reloads itself. One request per month is pending at a time (a constraint): a
second submit hears that the first is under way. The worker takes the request up by a
conditional UPDATE, so that a task delivered twice closes once and a request given up
is never started, and runs `closing.month_close`, which checks again under its lock;
the close and the request's outcome are saved in one transaction. A refusal or
failure is kept on the request, with its reason, and shown on the report. A request
no worker took up within ten minutes, or whose worker has not finished ten minutes
after taking it up, is given up: the report says so and finance may close again.
"""

from datetime import date

from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import User
from core.dates import month_start
from core.tasks import enqueue_after_commit
from reports import closing
from reports.models import MonthCloseRequest

Status = MonthCloseRequest.Status


class MonthCloseUnderWay(closing.MonthCloseRefused):
    """Another close of the month is queued or running."""


def month_close_request(
    *, month: date, user: User, reason: str = ""
) -> MonthCloseRequest:
    """Check that `user` may close `month` now and queue its close. Refused, with the
    reason in words, as the close itself would be, and while one is under way."""
    from reports.tasks import month_close_task  # tasks import this module

    month = month_start(month)
    closing.month_close_check(month=month, user=user, reason=reason)
    _give_up_lost(month)
    try:
        with transaction.atomic():
            request = MonthCloseRequest.objects.create(
                month=month, requested_by=user, reason=reason.strip()
            )
    except IntegrityError:
        raise _under_way(month) from None
    enqueue_after_commit(month_close_task, request.pk)
    return request


def month_close_run(request_id: int) -> MonthCloseRequest:
    """Close the month of a queued request (the worker's task)."""
    taken_up = MonthCloseRequest.objects.filter(
        pk=request_id,
        status=Status.QUEUED,
        requested_at__gte=timezone.now() - MonthCloseRequest.GIVEN_UP_AFTER,
    ).update(status=Status.RUNNING, started_at=timezone.now())
    request = MonthCloseRequest.objects.select_related("requested_by").get(
        pk=request_id
    )
    if not taken_up:
        return request  # run already (a task delivered twice), or given up
    failure = f"{request.month:%B %Y} could not be closed"
    with request.outcome_recorded(failure=failure, time_limit="5 minutes"):
        try:
            with transaction.atomic():
                request.close = closing.month_close(
                    month=request.month,
                    user=request.requested_by,
                    reason=request.reason,
                )
                request.status = Status.CLOSED
                request.save()
        except (closing.MonthCloseRefused, PermissionDenied) as refused:
            # Closed meanwhile, a source failed since, finance no more: in words.
            request.status, request.error = Status.FAILED, str(refused)
    return request


def month_close_request_shown(
    *, month: date, events: list[closing.CloseEvent]
) -> MonthCloseRequest | None:
    """The month's latest close request while it has something to say on the
    report: under way, given up, or failed (until the month is closed or reopened
    after it). `events`: the month's close history."""
    request = (
        MonthCloseRequest.objects.filter(month=month_start(month))
        .select_related("requested_by")
        .first()
    )
    if request is None or request.status == Status.CLOSED:
        return None
    finished = request.finished_at
    if finished and any(event.at > finished for event in events):
        return None
    return request


def _give_up_lost(month: date) -> None:
    """Mark the month's pending request failed once it is given up, so that finance
    may ask again (one request per month is pending at a time)."""
    pending = MonthCloseRequest.objects.filter(
        month=month, status__in=MonthCloseRequest.PENDING
    ).first()
    if pending is not None and pending.given_up:
        # Conditional: a worker that finished it meanwhile keeps its outcome.
        MonthCloseRequest.objects.filter(pk=pending.pk, status=pending.status).update(
            status=Status.FAILED,
            error=pending.given_up_message,
            finished_at=timezone.now(),
        )


def _under_way(month: date) -> MonthCloseUnderWay:
    pending = (
        MonthCloseRequest.objects.filter(
            month=month, status__in=MonthCloseRequest.PENDING
        )
        .select_related("requested_by")
        .first()
    )
    asked = (
        f": {pending.requested_by} asked at {pending.requested_at:%H:%M} UTC"
        if pending
        else ""
    )
    return MonthCloseUnderWay(f"{month:%B %Y} is already being closed{asked}.")
