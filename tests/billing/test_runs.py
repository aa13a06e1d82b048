"""Import runs outside their import: the sweep that finds runs whose worker stopped and
uploads the queue could not take, and imports and uploads while Redis is down (the
broker and the cache pointed at a closed port: `queue_down`)."""

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
import time_machine
from django.core.files import File
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db.models import Sum
from django.urls import reverse

from billing.models import BillingSource, CostRecord, ImportRun
from billing.runs import (
    QUEUE_DOWN,
    import_run_claim,
    import_runs_stuck,
    import_runs_sweep,
)
from spendtracker.celery import app
from tests.billing.importing import run_import
from tests.billing.test_import_workers import file_sums
from tests.budgets.test_alert_workers import database_url
from tests.data import FOCUS_REAL

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)  # CELERY_TASK_TIME_LIMIT, by default


@pytest.fixture(autouse=True)
def frozen():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def left_running(
    origin: str = ImportRun.Origin.UPLOAD, attempts: int = 1, age: timedelta = HOUR
) -> ImportRun:
    """A run whose worker stopped `age` after its attempt began."""
    run = ImportRun.objects.create(
        source_name="uploads",
        file_name=FOCUS_REAL.name,
        origin=origin,
        attempts=attempts,
        attempted_at=NOW - age - timedelta(seconds=1),
    )
    with FOCUS_REAL.open("rb") as export:
        run.upload.save(FOCUS_REAL.name, File(export))
    return run


def test_an_upload_left_running_past_the_time_limit_is_imported_again(
    media, eager_tasks
):
    run = left_running()

    sweep = import_runs_sweep(now=NOW)

    assert (sweep.stopped, sweep.requeued, sweep.enqueued) == (1, 1, 1)
    run.refresh_from_db()
    assert (run.status, run.attempts, run.error) == ("imported", 2, "")
    assert run.warnings == [
        "The worker stopped: attempt 1 had no result 3600 s after it began, and "
        "nothing of it was loaded. It was queued again (attempt 2 of 3)."
    ]
    assert CostRecord.objects.filter(import_run=run).count() == 1000


def test_a_run_within_the_time_limit_is_left_running(media):
    run = left_running(age=HOUR - timedelta(seconds=2))
    assert import_runs_sweep(now=NOW).stopped == 0
    run.refresh_from_db()
    assert run.status == "running"


def test_the_time_limit_is_the_task_time_limit(media, settings):
    settings.CELERY_TASK_TIME_LIMIT = 600
    run = left_running(origin=ImportRun.Origin.COMMAND, age=timedelta(minutes=10))
    assert list(import_runs_stuck(NOW)) == [run]
    assert list(import_runs_stuck(NOW - timedelta(seconds=2))) == []


def test_a_killed_command_line_import_is_failed_and_says_to_run_it_again(media):
    run = left_running(origin=ImportRun.Origin.COMMAND, attempts=0)

    sweep = import_runs_sweep(now=NOW)

    assert (sweep.stopped, sweep.requeued) == (1, 0)
    run.refresh_from_db()
    assert (run.status, run.finished_at) == ("failed", NOW)
    assert run.error == (
        "The worker stopped: this billing_import had no result 3600 s after it "
        "began, and nothing of it was loaded. Run the import again."
    )


def test_an_upload_stopped_three_times_is_failed_not_queued_again(media):
    run = left_running(attempts=3)

    import_runs_sweep(now=NOW)

    run.refresh_from_db()
    assert run.status == "failed"
    assert run.error.startswith(
        "The worker stopped during each of 3 attempts at this import"
    )
    assert "upload the file again" in run.error


def test_a_stopped_sync_is_failed_and_queued_again(media, eager_tasks):
    source = BillingSource.objects.create(name="api", kind=BillingSource.Kind.OPENAI)
    run = left_running(origin=ImportRun.Origin.SYNC)
    ImportRun.objects.filter(pk=run.pk).update(source=source)

    sweep = import_runs_sweep(now=NOW)

    assert (sweep.stopped, sweep.requeued) == (1, 1)
    run.refresh_from_db()
    assert run.status == "failed"
    assert run.error.endswith("A new sync of the source was queued.")
    again = ImportRun.objects.exclude(pk=run.pk).get()  # the sync ran (and failed)
    assert (again.origin, again.attempts) == ("sync", 2)


def test_a_run_whose_import_is_alive_is_left_alone(media, transactional_db):
    """Its row is locked by the import's transaction: a live worker holds it."""
    run = left_running()
    with psycopg.connect(database_url()) as importer:
        importer.execute(
            "SELECT id FROM billing_importrun WHERE id = %s FOR UPDATE", [run.pk]
        )
        assert import_runs_sweep(now=NOW).stopped == 0
    run.refresh_from_db()
    assert run.status == "running"


# Redis down


def test_a_command_line_import_needs_only_the_database(
    queue_down, django_capture_on_commit_callbacks, monkeypatch
):
    monkeypatch.setattr("billing.loader.PROGRESS_EVERY", 100)  # reports progress
    with django_capture_on_commit_callbacks(execute=True):
        code, result = run_import(FOCUS_REAL, "cli")

    assert (code, result["status"], result["rows"], result["error"]) == (
        0,
        "imported",
        1000,
        None,
    )
    run = ImportRun.objects.get()
    assert run.announce_due  # the alert evaluation could not be queued


def test_the_sweep_announces_nothing_while_the_queue_is_down(
    queue_down, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        run_import(FOCUS_REAL, "cli")
    assert import_runs_sweep(now=NOW).announced == 1
    assert ImportRun.objects.get().announce_due  # still down: still due


def test_the_sweep_announces_what_the_queue_missed_once_it_is_back(eager_tasks):
    run = ImportRun.objects.create(source_name="cli", announce_due=True)
    assert import_runs_sweep(now=NOW).announced == 1
    run.refresh_from_db()
    assert not run.announce_due


@pytest.fixture
def finance_client(client, world, media):
    client.force_login(world.finance)
    return client


def upload(client):
    return client.post(
        reverse("upload"),
        {
            "file": [SimpleUploadedFile("focus.csv", FOCUS_REAL.read_bytes())],
            "source": "new",
            "new_source_name": "uploads",
            "new_source_kind": "focus",
            "file_format": "auto",
        },
        HTTP_ACCEPT="application/json",
    )


def test_an_upload_while_the_queue_is_down_is_kept_queued_and_says_so(
    transactional_db, finance_client, queue_down
):
    """The request's own transaction commits, and its answer says what came after."""
    response = upload(finance_client)

    assert response.status_code == 202
    body = response.json()
    assert (body["status"], body["message"]) == ("queued", QUEUE_DOWN)
    assert body["message"].startswith("Queued for import when the queue is back")
    status = finance_client.get(body["status_url"])
    assert status.status_code == 200
    assert (status.json()["status"], status.json()["rows"]) == ("queued", 0)
    page = finance_client.get(status.json()["url"]).content.decode()
    assert "Queued for import when the queue is back" in page


def test_the_sweep_imports_an_upload_the_queue_could_not_take_once_it_is_back(
    finance_client, queue_down, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        run = ImportRun.objects.get(pk=upload(finance_client).json()["run"])
    assert import_runs_sweep(now=NOW).enqueued == 0  # still down
    run.refresh_from_db()
    assert (run.status, run.error) == ("queued", QUEUE_DOWN)

    queue_down.back()
    app.conf.task_always_eager = True  # a worker, in this process
    try:
        assert import_runs_sweep(now=NOW).enqueued == 1
    finally:
        app.conf.task_always_eager = False

    run.refresh_from_db()
    assert (run.status, run.attempts, run.error) == ("imported", 1, "")
    assert CostRecord.objects.filter(import_run=run).count() == 1000


def test_the_status_of_a_running_import_answers_with_the_cache_down(
    finance_client, queue_down
):
    run = ImportRun.objects.create(source_name="uploads", origin="upload")
    response = finance_client.get(reverse("import_status", args=[run.pk]))
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["rows"]) == ("running", 0)
    assert finance_client.get(run.get_absolute_url()).status_code == 200


def test_a_fourth_start_of_an_upload_fails_it_instead_of_importing(media):
    run = left_running(attempts=3, age=timedelta(0))

    assert import_run_claim(run_id=run.pk).status == "failed"

    run.refresh_from_db()
    assert (run.status, run.attempts, run.finished_at) == ("failed", 4, NOW)
    assert "each of 3 attempts" in run.error
    assert not CostRecord.objects.exists()


def test_billing_import_run_as_a_command_with_redis_stopped_imports(
    transactional_db, queue_down
):
    """The command in a process of its own, as an operator runs it, with the broker
    and the cache at the closed port: it needs only the database."""
    done = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "billing_import",
            str(FOCUS_REAL),
            "--source",
            "cli",
            "--json",
        ],
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "DATABASE_URL": database_url()},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "imported"
    rows, billed, _effective = file_sums(FOCUS_REAL)
    assert CostRecord.objects.count() == rows
    assert CostRecord.objects.aggregate(billed=Sum("billed_cost"))["billed"] == billed
    assert ImportRun.objects.get().announce_due
