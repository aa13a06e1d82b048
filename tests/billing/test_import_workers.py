"""An upload survives the death of the worker process that imports it: a real prefork
worker (a parent and the child that runs the task, as in production) on Redis, the
child SIGKILLed in the middle of the import, the message handed back to the queue,
and the upload imported once by the next child.

The workers and their queues are those of tests/budgets/test_alert_workers.py.
"""

import csv
import os
import signal
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest
from django.core.files import File
from django.db import connection
from django.db.models import Sum

from billing.models import BillingSource, CostRecord, ImportRun
from tests.budgets.test_alert_workers import (
    Workers,
    database_url,
    wait_for,
    waiting_for_a_lock,
)
from tests.data import FOCUS_REAL


def file_sums(path: Path) -> tuple[int, Decimal, Decimal]:
    """The file's own rows and cost sums, read without the importer."""
    with path.open(newline="") as export:
        rows = list(csv.DictReader(export))
    return (
        len(rows),
        sum((Decimal(row["BilledCost"]) for row in rows), Decimal(0)),
        sum((Decimal(row["EffectiveCost"]) for row in rows), Decimal(0)),
    )


@pytest.fixture
def workers(transactional_db, tmp_path):
    workers = Workers(tmp_path)
    yield workers
    workers.stop()


@pytest.fixture
def held_upload(tmp_path, settings):
    """An uploaded export queued to the workers, whose import waits inside its
    transaction for as long as the test holds its source's row lock."""
    settings.MEDIA_ROOT = tmp_path / "media"
    source = BillingSource.objects.create(name="uploads", kind=BillingSource.Kind.FOCUS)
    run = ImportRun.objects.create(
        source=source,
        source_name=source.name,
        file_name=FOCUS_REAL.name,
        origin=ImportRun.Origin.UPLOAD,
    )
    with FOCUS_REAL.open("rb") as export:
        run.upload.save(FOCUS_REAL.name, File(export))
    holder = psycopg.connect(database_url())
    holder.execute(
        "SELECT id FROM billing_billingsource WHERE id = %s FOR UPDATE", [source.pk]
    )
    yield SimpleNamespace(run=run, release=holder.rollback)
    holder.close()


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


def finished(run: ImportRun) -> bool:
    unfinished = [ImportRun.Status.QUEUED, ImportRun.Status.RUNNING]
    return ImportRun.objects.filter(pk=run.pk).exclude(status__in=unfinished).exists()


def test_an_upload_whose_worker_is_killed_mid_import_is_redelivered_and_imported_once(
    workers, held_upload, settings
):
    media = {"DJANGO_MEDIA_ROOT": str(settings.MEDIA_ROOT)}
    parent = workers.start("imports", queues=("imports",), pool="prefork", **media)
    workers.send("billing.tasks.import_upload", held_upload.run.pk)
    assert wait_for(waiting_for_a_lock), "the import never started"
    (child,) = children(parent.pid)

    os.kill(child, signal.SIGKILL)
    assert wait_for(lambda: children(parent.pid) not in ([], [child]))
    held_upload.release()

    assert wait_for(lambda: finished(held_upload.run)), "the upload was lost"
    run = ImportRun.objects.get(pk=held_upload.run.pk)
    assert (run.status, run.attempts, run.error) == ("imported", 2, "")
    rows, billed, effective = file_sums(FOCUS_REAL)
    assert run.rows_loaded == rows == CostRecord.objects.count()
    assert CostRecord.objects.aggregate(
        billed=Sum("billed_cost"), effective=Sum("effective_cost")
    ) == {"billed": billed, "effective": effective}
    assert ImportRun.objects.count() == 1
    log = (workers.tmp_path / "imports.log").read_text()
    assert "WorkerLostError" in log


def test_two_messages_for_one_upload_on_two_workers_import_it_once(
    workers, held_upload, settings
):
    """As when the sweep queued again an upload whose first message was only late:
    whichever attempt claims the run last imports it, the other leaves it alone."""
    media = {"DJANGO_MEDIA_ROOT": str(settings.MEDIA_ROOT)}
    workers.start("one", queues=("imports",), **media)
    workers.start("two", queues=("imports",), **media)
    workers.send("billing.tasks.import_upload", held_upload.run.pk)
    workers.send("billing.tasks.import_upload", held_upload.run.pk)
    assert wait_for(lambda: both_took_one(workers) and waiting_count() >= 1)
    held_upload.release()

    assert wait_for(lambda: finished(held_upload.run)), "the upload was lost"
    assert wait_for(lambda: waiting_count() == 0)
    run = ImportRun.objects.get(pk=held_upload.run.pk)
    assert run.status == "imported"
    rows, billed, _effective = file_sums(FOCUS_REAL)
    assert CostRecord.objects.count() == rows
    assert CostRecord.objects.aggregate(billed=Sum("billed_cost"))["billed"] == billed


def waiting_count() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]


def both_took_one(started: Workers) -> bool:
    logs = [(started.tmp_path / f"{name}.log").read_text() for name in ("one", "two")]
    return all("import_upload" in log and "received" in log for log in logs)
