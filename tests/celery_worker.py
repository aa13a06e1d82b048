"""The project's Celery app as the worker tests start it, in processes of their own.

Every task such a worker queues (an evaluation queues the sending of its emails) goes
to the test's own queues, never to the queues that the rest of the test run shares on
the same Redis database: the default queue becomes TEST_CELERY_QUEUE, and each queue
of the project's routes (imports) becomes a queue of that name under it. Remote control
is off, so the workers leave no broadcast queues behind.
"""

import os

from django.conf import settings

from spendtracker.celery import app


def own_queue(queue: str, test: str) -> str:
    """A queue of the project's, as the test named `test` has it of its own."""
    return test if queue == settings.CELERY_TASK_DEFAULT_QUEUE else f"{test}.{queue}"


def own_routes(test: str) -> dict[str, dict[str, str]]:
    """The project's routes, each to the test's own queue of that name."""
    return {
        name: {**route, "queue": own_queue(route["queue"], test)}
        for name, route in settings.CELERY_TASK_ROUTES.items()
    }


if "TEST_CELERY_QUEUE" in os.environ:  # the worker processes, not pytest's imports
    app.conf.task_default_queue = os.environ["TEST_CELERY_QUEUE"]
    app.conf.task_routes = own_routes(os.environ["TEST_CELERY_QUEUE"])
    app.conf.worker_enable_remote_control = False

    from pathlib import Path

    from celery import shared_task

    from core.tasks import RerunSafeTask

    @shared_task(base=RerunSafeTask, name="tests.poison")
    def poison(starts_file: str) -> None:
        """A task that kills the process running it, each time: a poison message.
        Each start is written down first."""
        with Path(starts_file).open("a") as starts:
            starts.write("started\n")
        os.kill(os.getpid(), 9)
