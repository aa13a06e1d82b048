"""A message that kills its worker each time is delivered three times, then given up:
a real prefork worker on Redis (tests/budgets/test_alert_workers.py), running the
test-only task `tests.poison` (tests/celery_worker.py), which SIGKILLs its process."""

import uuid

import pytest

from billing.tasks import billing_sync
from core.tasks import MAX_DELIVERIES
from tests.budgets.test_alert_workers import Workers, wait_for


@pytest.fixture
def workers(transactional_db, tmp_path):
    workers = Workers(tmp_path)
    yield workers
    workers.stop()


def test_a_poison_message_is_given_up_after_three_deliveries(workers):
    starts = workers.tmp_path / "starts"
    workers.start("victim", pool="prefork")
    workers.send("tests.poison", str(starts))

    log = workers.tmp_path / "victim.log"
    assert wait_for(lambda: "given up" in log.read_text(), 90), log.read_text()
    assert starts.read_text().splitlines() == ["started"] * MAX_DELIVERIES
    assert "WorkerLostError" in log.read_text()


def test_a_retry_is_not_counted_as_a_redelivery():
    """billing_sync retries a provider outage up to 6 times, each a new message under
    the same id: none of them is a delivery to a dead worker."""
    task, message = billing_sync, f"sync-{uuid.uuid4()}"
    deliveries = []
    for retries in (0, 0, 1, 2, 3, 4, 5, 6):
        task.push_request(id=message, retries=retries)
        try:
            deliveries.append(task._delivery_count())
        finally:
            task.pop_request()
    assert deliveries == [1, 2, 1, 1, 1, 1, 1, 1]
