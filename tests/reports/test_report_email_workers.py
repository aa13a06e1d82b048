"""The scheduled monthly report email goes out once with real Celery workers: two
worker processes on Redis run the schedule's task at the same moment, sharing the
test database, and each finance user receives one email.

The workers are those of the alert-email tests (`tests/budgets/test_alert_workers.py`):
the Redis database of CELERY_BROKER_URL, a queue of the test's own, emails written by
the file backend to one folder. They run at the real date, so the report emailed is
the previous calendar month's, whatever it holds.
"""

import time

import pytest

from accounts.models import User
from reports.models import ReportEmail
from tests.budgets.test_alert_workers import Workers, wait_for
from tests.conftest import make_user


@pytest.fixture
def workers(transactional_db, tmp_path):
    workers = Workers(tmp_path)
    yield workers
    workers.stop()


def recipients(workers: Workers) -> list[str]:
    """The To: of every email written, one per email."""
    return sorted(
        line.removeprefix("To: ")
        for path in workers.mail_dir.glob("*.log")
        for line in path.read_text().splitlines()
        if line.startswith("To: ")
    )


def pdfs(workers: Workers) -> int:
    return sum(
        path.read_text().count("Content-Type: application/pdf")
        for path in workers.mail_dir.glob("*.log")
    )


def test_two_workers_running_the_schedule_at_once_send_each_finance_user_one_email(
    workers, world
):
    finance = [
        world.finance,
        make_user("cfo@test.example", role=User.Role.FINANCE),
        make_user("controller@test.example", role=User.Role.FINANCE),
    ]
    make_user("quiet@test.example", role=User.Role.FINANCE, monthly_report_email=False)
    workers.start("one")
    workers.start("two")
    workers.send("reports.tasks.monthly_report_email_task")
    workers.send("reports.tasks.monthly_report_email_task")

    def all_sent() -> bool:
        rows = ReportEmail.objects.all()
        return rows.count() == 3 and not rows.exclude(status="sent").exists()

    assert wait_for(all_sent), "the workers did not send the report emails"
    time.sleep(2)  # let a late duplicate, if any, reach the folder
    assert recipients(workers) == sorted(user.email for user in finance)
    assert pdfs(workers) == 3
    assert ReportEmail.objects.filter(attempts=1).count() == 3
    for name in ("one", "two"):  # each worker ran the task: they really raced
        log = (workers.tmp_path / f"{name}.log").read_text()
        assert "monthly_report_email_task" in log and "succeeded" in log
