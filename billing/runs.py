"""The life of an ImportRun outside its import: handed to the queue, claimed by a
worker, and found by the sweep when its worker stopped or the queue was down.

Nothing here needs the broker to be up: a run the queue could not take waits as
`queued`, and the sweep (every five minutes) hands it over once the queue is back.
"""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from billing.models import ImportRun
from billing.signals import import_finished
from core.tasks import MAX_DELIVERIES

logger = logging.getLogger(__name__)

Status = ImportRun.Status
GAVE_UP = (
    f"The worker stopped during each of {MAX_DELIVERIES} attempts at this import "
    "(it may run out of memory on this file): not queued again. Look at the "
    "import worker's log, then upload the file again."
)
QUEUE_DOWN = (
    "Queued for import when the queue is back: the task queue (Redis) could not be "
    "reached. Nothing to do: the import starts within minutes of the queue's return."
)


class Superseded(Exception):
    """Another attempt at the same run took it over, or the sweep found it stopped:
    this attempt leaves the run to it."""


def time_limit() -> timedelta:
    return timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT)


def upload_enqueue(run: ImportRun) -> bool:
    """Hand an uploaded run to the import workers; with the queue down, leave it
    queued for the sweep. Called after commit: never raises for the broker."""
    from billing.tasks import import_upload  # tasks import this module

    try:
        import_upload.delay(run.pk)
    except Exception:  # the broker is down (kombu OperationalError and its causes)
        logger.warning("import run %s: the queue is down, left queued", run.pk)
        ImportRun.objects.filter(pk=run.pk, status=Status.RUNNING).update(
            status=Status.QUEUED, error=QUEUE_DOWN
        )
        run.status, run.error = Status.QUEUED, QUEUE_DOWN
        return False
    return True


@transaction.atomic
def import_run_claim(*, run_id: int) -> ImportRun | None:
    """The run for this attempt, counted; None when it is done. An attempt that
    holds the run (a second message for it) is waited for, and so is the database
    session of a worker that just died, until the server ends it. A run started too
    often is failed instead: a file that kills its worker each time must not be
    retried for ever."""
    run = (
        ImportRun.objects.select_for_update()
        .filter(pk=run_id, status__in=[Status.QUEUED, Status.RUNNING])
        .first()
    )
    if run is None:
        return None
    run.attempts += 1
    run.attempted_at = timezone.now()
    run.error = ""
    run.status = Status.RUNNING
    if run.attempts > MAX_DELIVERIES:
        run.status, run.finished_at = Status.FAILED, run.attempted_at
        run.error = GAVE_UP
    run.save()
    return run


def import_run_give_up(*, run_id: int) -> None:
    """A message delivered too often (its worker died each time): fail its run."""
    ImportRun.objects.filter(
        pk=run_id, status__in=[Status.QUEUED, Status.RUNNING]
    ).update(
        status=Status.FAILED,
        finished_at=timezone.now(),
        error=GAVE_UP,
    )


def import_run_hold(run: ImportRun) -> None:
    """Lock the run's row for the import's transaction, if this attempt still owns
    it: the sweep passes over a run whose row is locked (its worker is alive), and a
    second attempt at the same run waits, then finds it done."""
    owned = ImportRun.objects.select_for_update().filter(
        pk=run.pk, status=Status.RUNNING, attempts=run.attempts
    )
    if not owned.exists():
        raise Superseded


def import_finished_announce(run: ImportRun) -> None:
    """Tell the later apps (alert evaluation) that the run's data is in. What they
    could not queue (the broker down) is left for the sweep to announce again:
    the import itself is committed and stays a success."""
    failures = [
        (receiver, result)
        for receiver, result in import_finished.send_robust(sender=ImportRun, run=run)
        if isinstance(result, Exception)
    ]
    for receiver, error in failures:
        logger.warning("import run %s: %r failed: %s", run.pk, receiver, error)
    ImportRun.objects.filter(pk=run.pk).update(announce_due=bool(failures))


@dataclass(frozen=True)
class Sweep:
    stopped: int
    requeued: int
    enqueued: int
    announced: int

    def as_json(self) -> dict[str, int]:
        return self.__dict__.copy()


def import_runs_stuck(now: datetime):
    """Runs still running a task time limit after their attempt began: no worker can
    be on them any more (it would have been killed at the limit)."""
    return ImportRun.objects.filter(
        status=Status.RUNNING, attempted_at__lt=now - time_limit()
    )


def import_runs_sweep(*, now: datetime) -> Sweep:
    """Fail the runs whose worker stopped, and queue again those of an upload or a
    sync (within MAX_DELIVERIES attempts); hand uploads waiting for the queue to it;
    announce imports whose announcement the broker missed."""
    stopped, requeued, syncs = _stopped_runs_end(now)
    from billing.tasks import billing_sync  # tasks import this module

    for source_id, attempt in syncs:
        try:
            billing_sync.delay(source_id, attempt=attempt)
        except Exception:
            logger.warning("source %s: the queue is down, its sync waits", source_id)
    enqueued = sum(map(upload_enqueue, _queued_take()))
    announced = 0
    for run in ImportRun.objects.filter(announce_due=True):
        import_finished_announce(run)
        announced += 1
    return Sweep(stopped, requeued, enqueued, announced)


@transaction.atomic
def _stopped_runs_end(now: datetime) -> tuple[int, int, list[tuple[int, int]]]:
    # skip_locked: a run whose row is locked is inside a live import's transaction.
    stuck = import_runs_stuck(now).select_for_update(skip_locked=True)
    requeued, syncs = 0, []
    for run in stuck:
        again = run.origin != ImportRun.Origin.COMMAND and run.attempts < MAX_DELIVERIES
        run.error = _stopped_message(run, again)
        if again and run.origin == ImportRun.Origin.UPLOAD:
            run.status = Status.QUEUED
            requeued += 1
        else:
            run.status, run.finished_at = Status.FAILED, now
            if again:
                syncs.append((run.source_id, run.attempts + 1))
                requeued += 1
        run.save(update_fields=["status", "error", "finished_at"])
        logger.warning("import run %s: %s", run.pk, run.error)
    return len(stuck), requeued, syncs


def _stopped_message(run: ImportRun, again: bool) -> str:
    limit = int(time_limit().total_seconds())
    if run.attempts:
        what = (
            f"The worker stopped: attempt {run.attempts} had no result {limit} s "
            "after it began, and nothing of it was loaded"
        )
    elif run.origin == ImportRun.Origin.COMMAND:  # its own process, never counted
        what = (
            f"The worker stopped: this billing_import had no result {limit} s after "
            "it began, and nothing of it was loaded"
        )
    else:
        what = f"No worker took this import within {limit} s"
    if not again:
        if run.origin == ImportRun.Origin.COMMAND:
            return f"{what}. Run the import again."
        return GAVE_UP
    if run.origin == ImportRun.Origin.SYNC:
        return f"{what}. A new sync of the source was queued."
    attempt = f"attempt {run.attempts + 1} of {MAX_DELIVERIES}"
    return f"{what}. It was queued again ({attempt})."


def _queued_take() -> list[ImportRun]:
    """Uploads waiting for the queue, marked as handed over (upload_enqueue puts
    back any the queue still refuses). What the sweep said of an earlier attempt
    moves to the run's warnings, its history: a run handed over is no error."""
    with transaction.atomic():
        runs = list(
            ImportRun.objects.select_for_update(skip_locked=True).filter(
                status=Status.QUEUED, origin=ImportRun.Origin.UPLOAD
            )
        )
        for run in runs:
            if run.error and run.error != QUEUE_DOWN:
                run.warnings = [*run.warnings, run.error]
            run.status, run.error, run.attempted_at = Status.RUNNING, "", timezone.now()
            run.save(update_fields=["status", "error", "warnings", "attempted_at"])
    return runs
