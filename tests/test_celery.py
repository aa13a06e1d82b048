"""The beat schedule as beat runs it: each entry's task is the real one and runs, and
each message expires before the same entry is due again, so a stopped worker does
not find a pile of the same job waiting."""

from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
import time_machine
from celery import states

from spendtracker.celery import app

NOW = datetime(2026, 1, 20, 9, 30, tzinfo=UTC)
# What the README's Operations section promises of each entry: how often it runs.
PROMISED_EVERY = {
    "beat-heartbeat": timedelta(minutes=1),
    "sweep-import-runs": timedelta(minutes=5),
    "send-unsent-tasks": timedelta(minutes=5),
    "billing-sync-due": timedelta(minutes=15),
    "load-compute-invoices": timedelta(days=1),
    "rebuild-recent-daily-costs": timedelta(days=1),
    "evaluate-alerts": timedelta(hours=1),
    "send-alert-emails": timedelta(minutes=5),
    "send-webhooks": timedelta(minutes=5),
    "send-alert-digests": timedelta(days=1),
    "send-report-emails": timedelta(hours=1),
}
# Entries due once a month, by default (MONTHLY_REPORT_SCHEDULE): day, hour, minute.
PROMISED_MONTHLY = {"email-monthly-report": (3, 8, 0)}


def due_times(schedule, start: datetime, days: int = 7) -> list[datetime]:
    """Every minute of a week at which the crontab is due, read from the crontab's
    own sets of minutes, hours, days and months."""
    minutes = (start + timedelta(minutes=m) for m in range(days * 24 * 60))
    return [
        moment
        for moment in minutes
        if moment.minute in schedule.minute
        and moment.hour in schedule.hour
        and moment.isoweekday() % 7 in schedule.day_of_week
        and moment.day in schedule.day_of_month
        and moment.month in schedule.month_of_year
    ]


def test_each_periodic_job_runs_as_often_as_promised_and_expires_before_its_next_turn():
    schedule = app.conf.beat_schedule
    assert set(schedule) == set(PROMISED_EVERY) | set(PROMISED_MONTHLY)
    start = NOW.replace(hour=0, minute=0)
    for name in PROMISED_EVERY:
        entry = schedule[name]
        times = due_times(entry["schedule"], start)
        gaps = {later - earlier for earlier, later in pairwise(times)}
        assert gaps == {PROMISED_EVERY[name]}, name
        expires = timedelta(seconds=entry["options"]["expires"])
        assert expires < PROMISED_EVERY[name], name


def test_the_monthly_report_is_emailed_once_a_month_and_expires_within_the_day():
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for name, (day, hour, minute) in PROMISED_MONTHLY.items():
        entry = app.conf.beat_schedule[name]
        times = due_times(entry["schedule"], start, days=365)
        assert [(t.day, t.hour, t.minute) for t in times] == [(day, hour, minute)] * 12
        assert [t.month for t in times] == list(range(1, 13))
        assert timedelta(seconds=entry["options"]["expires"]) < timedelta(days=1)


@pytest.mark.django_db
def test_every_beat_entry_names_a_real_task_that_runs(world):
    app.loader.import_default_modules()
    with time_machine.travel(NOW, tick=False):
        for name, entry in app.conf.beat_schedule.items():
            task = app.tasks[entry["task"]]
            result = task.apply(
                args=entry.get("args", ()), kwargs=entry.get("kwargs", {})
            )
            assert result.state == states.SUCCESS, (name, result.result)


# What runs on the imports queue: every task that imports, syncs or rebuilds the
# rollups of billing data, and nothing else.
IMPORT_TASKS = {
    "billing.tasks.import_upload",
    "billing.tasks.billing_sync",
    "billing.tasks.billing_sync_due",
    "billing.tasks.compute_invoices_load_task",
    "billing.tasks.daily_costs_rebuild_recent",
    "billing.tasks.rollup_rebuild_for_rates",
    "billing.tasks.unallocated_costs_allocate_task",
    # A run's estimates rebuild the rollup of their days.
    "budgets.tasks.run_estimates_restate_task",
    "budgets.tasks.run_estimates_restate_after_import",
}


def queue_of(name: str) -> str:
    """The queue a task named `name` is sent to, as the app routes it."""
    return app.amqp.router.route({}, name)["queue"].name


def our_tasks() -> set[str]:
    app.loader.import_default_modules()
    return {name for name in app.tasks if not name.startswith("celery.")}


def test_imports_syncs_and_rollup_rebuilds_go_to_the_imports_queue():
    assert our_tasks() >= IMPORT_TASKS
    assert {name: queue_of(name) for name in IMPORT_TASKS} == dict.fromkeys(
        IMPORT_TASKS, "imports"
    )


def test_alerts_emails_reports_and_pdfs_stay_on_the_default_queue():
    others = our_tasks() - IMPORT_TASKS

    assert {
        "budgets.tasks.alerts_evaluate_task",
        "budgets.tasks.notifications_send",
        "budgets.tasks.webhooks_send",
        "reports.tasks.report_emails_send_task",
        "reports.tasks.records_check_task",
        "reports.tasks.report_file_render_task",
        # A connection test is one small page: it waits behind no import.
        "billing.tasks.source_connection_test",
    } <= others
    assert {name: queue_of(name) for name in others} == dict.fromkeys(others, "celery")
