"""What every task whose rerun is safe shares: it is acknowledged when it ends, not when
it is received, so that a worker that dies under it (killed, out of memory) hands it
back to the queue instead of losing it; and a message that keeps killing its worker is
given up after a few deliveries instead of looping for ever."""

import logging
from functools import partial

from celery import Task, current_app, shared_task
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

logger = logging.getLogger(__name__)

# How many times one message may start before it is given up: the first delivery and
# two redeliveries after a worker died under it.
MAX_DELIVERIES = 3
DELIVERIES_KEPT_SECONDS = 24 * 60 * 60


class RerunSafeTask(Task):
    """Base of the tasks that are idempotent by construction (a claim by conditional
    UPDATE, a unique constraint, whole periods replaced under a row lock), and only
    those: running one twice must change nothing the first run did not."""

    acks_late = True
    reject_on_worker_lost = True

    def __call__(self, *args, **kwargs):
        delivery = self._delivery_count()
        if delivery > MAX_DELIVERIES:
            logger.error(
                "%s[%s] given up: its worker stopped during each of %d deliveries",
                self.name,
                self.request.id,
                MAX_DELIVERIES,
            )
            self.given_up(*args, **kwargs)
            return None
        return super().__call__(*args, **kwargs)

    def given_up(self, *args, **kwargs) -> None:
        """Called instead of the task when its message was delivered too often;
        a task that records its runs marks the run failed here."""

    def _delivery_count(self) -> int:
        """This delivery's number for the message, counted in the cache (best
        effort: without a cache, every delivery counts as the first)."""
        if self.request.id is None or self.request.is_eager:
            return 1
        # A retry (autoretry_for) is a new message under the same id: counted apart.
        key = f"task-deliveries:{self.request.id}:{self.request.retries or 0}"
        try:
            cache.add(key, 0, DELIVERIES_KEPT_SECONDS)
            return cache.incr(key)
        except Exception:  # the cache is down: run it, as without a count
            logger.warning("could not count the deliveries of %s", self.request.id)
            return 1


@shared_task(base=RerunSafeTask)
def beat_heartbeat() -> str:
    """Record that the beat schedule reached a worker, for /healthz."""
    # Here, not above: the worker tests' app imports this module before Django is set.
    from core.models import BEAT, Heartbeat

    now = timezone.now()
    Heartbeat.objects.update_or_create(name=BEAT, defaults={"beat_at": now})
    return now.isoformat()


def enqueue_after_commit(task: Task, *args) -> None:
    """Queue a rerun-safe task once the current transaction commits. With the broker
    down, the committed change stays a success: the task is kept in the database and
    `unsent_tasks_send` queues it once the broker is back. Arguments must be JSON."""
    transaction.on_commit(partial(_send, task, list(args)))


def _send(task: Task, args: list) -> None:
    from core.models import UnsentTask  # the worker tests import this before Django

    try:
        task.apply_async(args=args)
    except Exception:  # the broker is down (kombu OperationalError and its causes)
        logger.warning("%s%r: the queue is down, kept to send later", task.name, args)
        UnsentTask.objects.create(task=task.name, args=args)


@shared_task(base=RerunSafeTask)
def unsent_tasks_send() -> int:
    """Queue the tasks kept while the broker was down, oldest first; how many. Each
    row goes once it is queued, so a second sweep at once finds it taken (locked)."""
    from core.models import UnsentTask

    sent = 0
    while True:
        with transaction.atomic():
            task = UnsentTask.objects.select_for_update(skip_locked=True).first()
            if task is None:
                return sent
            known = current_app.tasks.get(task.task)
            if known is None:  # renamed or removed by an upgrade: it can never go
                logger.error("unsent task %s dropped: no such task", task)
            else:
                known.apply_async(args=task.args)
                sent += 1
            task.delete()
