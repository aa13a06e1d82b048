"""Alert emails go out once with real Celery workers: separate processes on Redis,
sharing the test database, two at once, and one killed in the middle of a send.

Emails land in a file backend directory that every worker writes to.

The workers use the Redis database of CELERY_BROKER_URL (`make test` and CI set it to
a redis:// URL; a parallel run sets its own database number there). Nothing is
flushed: each test has queues of its own (its default queue, and its imports queue),
to which its workers also send the tasks they queue (`tests/celery_worker.py`), and it
deletes them when it ends.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote

import psycopg
import pytest
from celery import Celery
from django.core.files import File
from django.db import connection
from django.utils import timezone
from kombu import Connection, Exchange, Queue

from billing.models import BillingSource, ImportRun
from budgets.alerts import alerts_evaluate
from budgets.models import Alert, AlertKind, AlertRule, Notification
from core.delivery import BREAKER_FAILURES
from tests.celery_worker import own_queue, own_routes
from tests.conftest import make_budget, make_project, make_spend, wait_for
from tests.data import FOCUS_REAL
from tests.smtp_servers import HangingServer

ROOT = Path(__file__).resolve().parents[2]


def redis_url() -> str:
    configured = os.environ.get("CELERY_BROKER_URL", "")
    assert configured.startswith(("redis://", "rediss://")), (
        "worker tests start Celery workers in other processes: give them a Redis "
        f"broker in CELERY_BROKER_URL, as `make test` and CI do (it is {configured!r})"
    )
    return configured


def database_url() -> str:
    settings = connection.settings_dict
    assert connection.vendor == "postgresql", (
        "worker tests share the test database with other processes: run them on "
        "PostgreSQL (DATABASE_URL), as `make test` and CI do"
    )
    password = f":{quote(settings['PASSWORD'])}" if settings["PASSWORD"] else ""
    host = settings["HOST"] or "127.0.0.1"
    port = settings["PORT"] or 5432
    return f"postgres://{settings['USER']}{password}@{host}:{port}/{settings['NAME']}"


class Workers:
    """Celery worker processes on the test's own queues, writing emails to one folder.
    Tasks are sent as the project routes them, each to the test's queue of that name."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.mail_dir = tmp_path / "mail"
        self.mail_dir.mkdir()
        self.queue = f"alerts-test-{uuid.uuid4().hex[:8]}"
        self.processes: list[subprocess.Popen] = []
        # Not the current app: the project's tasks in this process keep theirs.
        self.client = Celery(set_as_current=False)
        self.client.conf.task_default_queue = self.queue
        self.client.conf.task_routes = own_routes(self.queue)

    def queues(self) -> list[str]:
        """The test's own queues: its default queue and one per routed queue."""
        routed = {route["queue"] for route in own_routes(self.queue).values()}
        return [self.queue, *sorted(routed)]

    def start(
        self,
        name: str,
        queues: tuple[str, ...] = ("celery",),
        pool: str = "solo",
        **env: str,
    ) -> subprocess.Popen:
        """A worker consuming the test's own queues of these names (the project's
        default queue is `celery`); in one process (solo), or a parent with one
        child process that runs the tasks (prefork, as in production)."""
        log = self.tmp_path / f"{name}.log"
        environment = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "CELERY_BROKER_URL": redis_url(),
            "TEST_CELERY_QUEUE": self.queue,
            "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
            "EMAIL_FILE_PATH": str(self.mail_dir),
            **env,
        }
        command = [
            sys.executable, "-m", "celery", "-A", "tests.celery_worker", "worker",
            "--pool", pool, "--concurrency", "1",
            "--queues", ",".join(own_queue(queue, self.queue) for queue in queues),
            "--hostname", f"{name}@{self.queue}", "--without-gossip",
            "--without-mingle", "--without-heartbeat", "--loglevel", "INFO",
        ]  # fmt: skip
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=environment,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        self.processes.append(process)
        assert wait_for(lambda: "ready." in log.read_text(), 60), log.read_text()
        return process

    def send(self, task: str, *args: object) -> None:
        # An explicit connection: Celery prefers CELERY_BROKER_URL from the
        # environment (the tests' in-memory broker) to the one it was given.
        with Connection(redis_url()) as broker:
            self.client.send_task(task, args, connection=broker)

    def emails(self) -> list[str]:
        """The subject line of every email written, one per email."""
        subjects = []
        for path in sorted(self.mail_dir.glob("*.log")):
            for line in path.read_text().splitlines():
                if line.startswith("Subject: "):
                    subjects.append(line.removeprefix("Subject: "))
        return subjects

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)
        self.forget_queue()

    def forget_queue(self) -> None:
        """Delete this test's queues, their bindings, and the messages a killed
        worker left unacknowledged on them; nothing else in the database is touched."""
        names = self.queues()
        with Connection(redis_url()) as broker:
            channel = broker.default_channel
            for name in names:
                queue = Queue(name, Exchange(name), routing_key=name)
                queue(channel).declare()
                queue(channel).delete()
            client = channel.client
            for tag, delivery in client.hgetall(channel.unacked_key).items():
                _message, _exchange, routing_key = json.loads(delivery)
                if routing_key in names:
                    client.hdel(channel.unacked_key, tag)
                    client.zrem(channel.unacked_index_key, tag)


@pytest.fixture
def workers(transactional_db, tmp_path):
    workers = Workers(tmp_path)
    yield workers
    workers.stop()


@pytest.fixture
def overspent(world):
    """Eight projects that have spent 90% of this month's plan (the workers evaluate
    at the real date); the lead and watching finance hear of each. Only the month-plan
    rule runs."""
    world.alert.delete()
    world.finance.watched_teams.add(world.team)
    for kind in AlertKind.values:
        if kind != AlertKind.BUDGET_USED:
            AlertRule.objects.create(kind=kind, is_enabled=False)
    today = timezone.now().date()
    month = today.replace(day=1)
    for index in range(8):
        project = make_project(
            world.team,
            world.lead,
            f"busy-{index}",
            start_date=month,
            end_date=month + timedelta(days=27),
        )
        make_budget(project, {month: "1000"})
        make_spend(project, today, "900")
    return world


def all_sent() -> bool:
    notifications = Notification.objects.all()
    return notifications.exists() and not notifications.exclude(status="sent").exists()


def test_two_workers_evaluating_at_once_send_each_email_once(workers, overspent):
    workers.start("one")
    workers.start("two")
    workers.send("budgets.tasks.alerts_evaluate_task")
    workers.send("budgets.tasks.alerts_evaluate_task")
    assert wait_for(all_sent), "the workers did not send the alert emails"
    time.sleep(2)  # let a late duplicate, if any, reach the folder
    alerts = Alert.objects.count()
    emails = workers.emails()
    assert alerts == 8
    assert len(emails) == 2 * alerts  # the lead and finance, once each
    assert len(set(emails)) == alerts
    assert Notification.objects.filter(attempts=1).count() == 2 * alerts
    for name in ("one", "two"):  # each worker did evaluate: they really raced
        log = (workers.tmp_path / f"{name}.log").read_text()
        assert "alerts_evaluate_task" in log and "succeeded" in log


def test_a_worker_killed_while_sending_is_made_good_once_after_restart(
    workers, overspent
):
    decided = alerts_evaluate(send_later=False)  # the decision, committed
    owed = len(decided.notifications)
    assert owed == 16
    marker = workers.tmp_path / "stalled"
    stalling = workers.start(
        "doomed",
        EMAIL_BACKEND="tests.email_backends.StallingBackend",
        STALL_MARKER=str(marker),
    )
    workers.send("budgets.tasks.notifications_send")
    assert wait_for(marker.exists), "the worker never reached the send"
    os.kill(stalling.pid, signal.SIGKILL)
    stalling.wait(timeout=30)
    stuck = Notification.objects.get(status=Notification.Status.SENDING)
    assert workers.emails() == []

    # Ten minutes later the claim has expired; a restarted worker's sweep sends all.
    Notification.objects.filter(pk=stuck.pk).update(
        claimed_at=stuck.claimed_at - timedelta(minutes=11)
    )
    workers.start("restarted")
    workers.send("budgets.tasks.notifications_send")
    assert wait_for(all_sent), "the restarted worker did not send what was owed"
    emails = workers.emails()
    assert len(emails) == owed
    assert len(set(emails)) == owed // 2  # each alert to the lead and finance
    stuck.refresh_from_db()
    assert stuck.attempts == 2


def test_a_hanging_mail_server_holds_the_worker_for_three_timeouts_not_one_per_email(
    workers, overspent
):
    """Sixteen emails owed, a mail server that accepts connections and never answers:
    the worker's sweep gives up on it after BREAKER_FAILURES timeouts and leaves the
    rest owed, untouched, for the next sweep."""
    assert len(alerts_evaluate(send_later=False).notifications) == 16
    hanging = HangingServer()
    timeout = 2
    workers.start(
        "patient",
        EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=str(hanging.port),
        EMAIL_TIMEOUT=str(timeout),
    )
    log = workers.tmp_path / "patient.log"
    try:
        workers.send("budgets.tasks.notifications_send")
        assert wait_for(lambda: "succeeded in" in log.read_text(), 120), log.read_text()
    finally:
        hanging.close()
    took = float(re.search(r"succeeded in ([\d.]+)s", log.read_text()).group(1))
    assert len(hanging.connections) == BREAKER_FAILURES
    assert BREAKER_FAILURES * timeout <= took < (BREAKER_FAILURES + 1) * timeout
    owed = Notification.objects.filter(status="pending")
    assert owed.count() == 16
    assert owed.filter(attempts=1).count() == BREAKER_FAILURES
    assert owed.filter(attempts=0, last_error="").count() == 16 - BREAKER_FAILURES


@pytest.fixture
def stuck_import(tmp_path, settings):
    """An uploaded export whose import will wait for as long as the test holds its
    source's row lock, as behind another import of the same source."""
    settings.MEDIA_ROOT = tmp_path / "media"
    source = BillingSource.objects.create(name="uploads", kind=BillingSource.Kind.FOCUS)
    run = ImportRun.objects.create(
        source=source, source_name=source.name, file_name=FOCUS_REAL.name
    )
    with FOCUS_REAL.open("rb") as export:
        run.upload.save(FOCUS_REAL.name, File(export))
    with psycopg.connect(database_url()) as holder:
        holder.execute(
            "SELECT id FROM billing_billingsource WHERE id = %s FOR UPDATE", [source.pk]
        )
        yield SimpleNamespace(run=run, release=holder.rollback)


def waiting_for_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0] > 0


def done(run: ImportRun) -> bool:
    running = ImportRun.Status.RUNNING
    return ImportRun.objects.filter(pk=run.pk).exclude(status=running).exists()


def test_alert_emails_go_out_while_an_import_holds_the_import_worker(
    workers, overspent, stuck_import, settings
):
    media = {"DJANGO_MEDIA_ROOT": str(settings.MEDIA_ROOT)}
    workers.start("imports", queues=("imports",), **media)
    workers.start("default", queues=("celery",), **media)
    workers.send("billing.tasks.import_upload", stuck_import.run.pk)
    assert wait_for(waiting_for_a_lock), "the import never started"
    owed = len(alerts_evaluate(send_later=False).notifications)
    assert owed == 16

    workers.send("budgets.tasks.notifications_send")

    assert wait_for(all_sent, 30), "the alert emails waited behind the import"
    assert len(workers.emails()) == owed
    stuck_import.run.refresh_from_db()
    assert stuck_import.run.status == ImportRun.Status.RUNNING
    stuck_import.release()
    assert wait_for(lambda: done(stuck_import.run)), "the import worker never finished"
    stuck_import.run.refresh_from_db()
    assert stuck_import.run.status == ImportRun.Status.IMPORTED
    assert stuck_import.run.rows_loaded == 1000
