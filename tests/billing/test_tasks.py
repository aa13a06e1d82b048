"""The rollup task, run by a real Celery worker
on the configured broker (Redis in CI).
"""

import time
from datetime import timedelta
from decimal import Decimal

import pytest
from celery.contrib.testing.worker import start_worker
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from django.utils import timezone

from billing.models import DailyCost, ImportRun
from billing.services import NewSource, billing_upload_accept
from billing.tasks import daily_costs_rebuild_recent
from spendtracker.celery import app
from tests.conftest import make_cost_record
from tests.data import FOCUS_REAL


@pytest.fixture
def worker(transactional_db):
    """One worker on both queues, as `make run` has it: these tasks go to the imports
    queue (settings.CELERY_TASK_ROUTES)."""
    # Earlier tests' imports queue evaluations on the default queue, and uploads on
    # the imports queue, which only this worker consumes: it must not run them
    # against this test's data. Only those queues are purged, never the database.
    queues = [settings.CELERY_TASK_DEFAULT_QUEUE, settings.IMPORTS_QUEUE]
    with app.connection_for_write() as broker:
        for queue in queues:
            broker.default_channel.queue_purge(queue)
    with start_worker(
        app, pool="solo", perform_ping_check=False, shutdown_timeout=10, queues=queues
    ):
        yield


def wait_for(condition, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def test_a_worker_rebuilds_the_recent_rollup(worker):
    yesterday = timezone.now().date() - timedelta(days=1)
    make_cost_record(yesterday, "12.5")
    daily_costs_rebuild_recent.delay()
    assert wait_for(lambda: DailyCost.objects.exists()), "the worker did not run"
    row = DailyCost.objects.get()
    assert (row.date, row.billed_cost) == (
        yesterday,
        Decimal("12.5"),
    )


def test_a_worker_imports_an_uploaded_export(worker, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    sample = FOCUS_REAL
    with transaction.atomic():
        run = billing_upload_accept(
            uploaded=[SimpleUploadedFile("focus.csv", sample.read_bytes())],
            source=NewSource(name="uploads", kind="focus"),
        )
    assert wait_for(
        lambda: ImportRun.objects.get(pk=run.pk).status != ImportRun.Status.RUNNING
    ), "the worker did not import the upload"
    run.refresh_from_db()
    assert (run.status, run.rows_loaded) == (ImportRun.Status.IMPORTED, 1000)
