import logging

from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse
from django.utils import timezone

from billing.models import ImportRun
from billing.runs import import_runs_stuck
from core.heartbeat import beat_age
from core.models import UnsentTask
from spendtracker.celery import app

logger = logging.getLogger(__name__)

# Beat sends the heartbeat every minute: three missed beats are worth a look.
BEAT_LATE_SECONDS = 3 * 60


def health(request: HttpRequest) -> JsonResponse:
    """What to monitor (README, Operations): the database, the broker, how long ago
    beat's heartbeat ran, and the import runs stuck or waiting for the queue. 503 only
    when the database is down: the portal cannot serve without it, but it still
    serves without Redis (`degraded`)."""
    broker = _broker_state()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError:
        # The error's text (hosts, users) is for the log, not for anyone who asks.
        logger.exception("/healthz: the database is down")
        body = {"status": "down", "database": "down", "broker": broker}
        return JsonResponse(body, status=503)
    now = timezone.now()
    age = beat_age(now)
    beat_age_seconds = None if age is None else int(age.total_seconds())
    stuck = import_runs_stuck(now).count()
    queued = ImportRun.objects.filter(status=ImportRun.Status.QUEUED).count()
    unsent = UnsentTask.objects.count()
    healthy = (
        broker == "ok"
        and beat_age_seconds is not None
        and beat_age_seconds <= BEAT_LATE_SECONDS
        and not stuck
    )
    return JsonResponse(
        {
            "status": "ok" if healthy else "degraded",
            "database": "ok",
            "broker": broker,
            "beat_age_seconds": beat_age_seconds,
            "stuck_runs": stuck,
            "queued_runs": queued,
            "unsent_tasks": unsent,
        }
    )


def _broker_state() -> str:
    try:
        with app.connection_for_write() as broker:
            broker.ensure_connection(
                max_retries=1, interval_start=0, interval_step=0, timeout=2
            )
    except Exception:  # any transport's way of saying it is unreachable
        logger.warning("/healthz: the broker is down", exc_info=True)
        return "down"
    return "ok"
