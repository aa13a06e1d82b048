"""The rollup task, run by a real Celery worker
on the configured broker (Redis in CI).
"""

from datetime import timedelta
from decimal import Decimal

from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from django.utils import timezone

from billing.models import DailyCost, ImportRun
from billing.services import NewSource, billing_upload_accept
from billing.tasks import daily_costs_rebuild_recent
from tests.conftest import make_cost_record, wait_for
from tests.data import FOCUS_REAL


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
