"""The rollup task, run by a real Celery worker
on the configured broker (Redis in CI).
"""

import time
from datetime import UTC, timedelta
from decimal import Decimal

import pytest
from celery.contrib.testing.worker import start_worker
from django.utils import timezone

from billing.models import BillingSource, CostRecord, DailyCost
from billing.tasks import daily_costs_rebuild_recent
from spendtracker.celery import app


@pytest.fixture
def worker(transactional_db):
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        yield


def wait_for(condition, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def test_a_worker_rebuilds_the_recent_rollup(worker):
    source = BillingSource.objects.create(name="s", kind=BillingSource.Kind.FOCUS)
    yesterday = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    yesterday -= timedelta(days=1)
    CostRecord.objects.create(
        source=source,
        billing_account_id="a",
        billing_period_start=yesterday.replace(day=1),
        billing_period_end=yesterday.replace(day=1) + timedelta(days=32),
        charge_period_start=yesterday,
        charge_period_end=yesterday + timedelta(days=1),
        charge_category="Usage",
        billed_cost=Decimal("12.5"),
        effective_cost=Decimal("12.5"),
        list_cost=Decimal("12.5"),
        contracted_cost=Decimal("12.5"),
        billing_currency="USD",
        provider_name="AWS",
    )
    daily_costs_rebuild_recent.delay()
    assert wait_for(lambda: DailyCost.objects.exists()), "the worker did not run"
    row = DailyCost.objects.get()
    assert (row.date, row.billed_cost) == (
        yesterday.astimezone(UTC).date(),
        Decimal("12.5"),
    )


def test_the_nightly_rollup_is_scheduled_once_a_day_and_expires_before_the_next():
    entry = app.conf.beat_schedule["rebuild-recent-daily-costs"]
    assert entry["task"] == daily_costs_rebuild_recent.name
    assert entry["schedule"].hour == {2} and entry["schedule"].minute == {15}
    assert entry["options"]["expires"] < 24 * 60 * 60
