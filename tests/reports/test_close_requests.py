"""A month is closed by a worker, never in the web request: the close form checks
at once what can refuse a close, records the request and queues it; the report says
the close is under way (it reloads itself), then shows the snapshot, or why the close
failed, or that no worker took it up within ten minutes.

Except in the real-worker test, time is frozen in March 2026 and the worker's part
(`month_close_run`, what the task calls) runs in the test.
"""

import threading
from datetime import UTC, date, datetime, timedelta

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.contrib.messages import get_messages
from django.db import connection
from django.test import Client
from django.urls import reverse

from billing.models import BillingSource
from reports import closing
from reports.close_requests import month_close_run
from reports.closing import month_close
from reports.models import MonthClose, MonthCloseRequest
from spendtracker.celery import app
from tests.budgets.test_alert_workers import Workers, wait_for
from tests.conftest import make_spend

FEBRUARY = date(2026, 2, 1)
END_OF_FEBRUARY = datetime(2026, 3, 1, tzinfo=UTC)
IN_MARCH = datetime(2026, 3, 10, 9, tzinfo=UTC)
PERSONAS = ("lead", "member", "outsider", "finance", "admin")


@pytest.fixture
def february(world):
    """Spend in February, and every source final through its end."""
    make_spend(world.project, date(2026, 2, 3), "1500")
    make_spend(world.other_project, date(2026, 2, 11), "90")
    BillingSource.objects.update(data_complete_through=END_OF_FEBRUARY)
    return world


@pytest.fixture
def in_march(time_machine):
    time_machine.move_to(IN_MARCH, tick=False)
    return time_machine


def submit(client, user, reason: str = ""):
    client.force_login(user)
    return client.post(reverse("month_close", args=[FEBRUARY]), {"reason": reason})


def report(client):
    return client.get(reverse("report_detail", args=[FEBRUARY]))


def status_on(response) -> str | None:
    """The close request's state as the report's month-close panel shows it."""
    html = response.content.decode()
    marker = 'data-testid="close-request" data-status="'
    if marker not in html:
        return None
    return html.split(marker)[1].split('"')[0]


def messages_of(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def test_the_form_queues_the_close_and_the_report_waits_for_the_worker(
    client, february, in_march, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as queued:
        response = submit(client, february.finance, "Board pack due Monday")
    assert response.status_code == 302
    assert response.url == reverse("report_detail", args=[FEBRUARY])
    assert messages_of(response) == [
        "February 2026 is being closed: a worker stores its report's files. "
        "This page shows the closed report when it is done."
    ]
    assert not MonthClose.objects.exists()  # nothing closed in the request
    request = MonthCloseRequest.objects.get()
    assert (request.month, request.requested_by, request.reason) == (
        FEBRUARY,
        february.finance,
        "Board pack due Monday",
    )
    assert (request.requested_at, request.status) == (IN_MARCH, "queued")
    assert len(queued) == 1  # the worker's task, queued once the request commits

    waiting = report(client)
    assert waiting["Refresh"] == "5"
    assert status_on(waiting) == "queued"
    assert 'data-testid="close-form"' not in waiting.content.decode()

    month_close_run(request.pk)  # the worker's task

    request.refresh_from_db()
    close = MonthClose.objects.get()
    assert (request.status, request.close, request.error) == ("closed", close, "")
    assert (close.closed_by, close.reason) == (february.finance, request.reason)
    assert close.files.count() == 5
    closed = report(client)
    assert not closed.has_header("Refresh")
    assert status_on(closed) is None
    assert 'data-testid="report-status">Closed<' in closed.content.decode()
    history = client.get(reverse("report_json", args=[FEBRUARY])).json()
    assert history["close_history"] == [
        {
            "kind": "close",
            "by": str(february.finance),
            "at": IN_MARCH.isoformat(),
            "reason": "Board pack due Monday",
        }
    ]


def test_what_refuses_a_close_is_said_at_once_and_queues_nothing(
    client, february, in_march
):
    BillingSource.objects.filter(name="AWS export").update(data_complete_through=None)
    refused = submit(client, february.finance)
    assert messages_of(refused) == [
        "February 2026 is not ready to close: AWS export has no final data yet. "
        "Give a reason to close it anyway."
    ]
    march = client.post(reverse("month_close", args=[date(2026, 3, 1)]))
    assert messages_of(march)[-1] == (
        "March 2026 has not ended: close it once it is over."
    )
    month_close(month=FEBRUARY, user=february.admin, reason="late AWS data")
    already = submit(client, february.finance, "again")
    assert messages_of(already)[-1] == (
        f"February 2026 is already closed, by {february.admin} "
        "on 10 March 2026 at 09:00 UTC."
    )
    assert not MonthCloseRequest.objects.exists()


def test_a_close_the_worker_could_not_make_says_why_and_offers_the_form_again(
    client, february, in_march
):
    submit(client, february.finance)
    BillingSource.objects.filter(name="AWS export").update(
        last_error="focus.csv, row 3, column BilledCost: 'abc' is not a number"
    )
    request = month_close_run(MonthCloseRequest.objects.get().pk)

    assert request.status == "failed"
    assert request.error.startswith(
        "February 2026 is not ready to close: AWS export failed: focus.csv, row 3"
    )
    assert request.finished_at == IN_MARCH
    assert not MonthClose.objects.exists()
    page = report(client)
    assert not page.has_header("Refresh")
    assert status_on(page) == "failed"
    html = page.content.decode()
    assert "AWS export failed: focus.csv, row 3, column BilledCost" in html
    assert 'data-testid="close-form"' in html  # finance may try again


def test_a_close_that_breaks_or_runs_out_of_time_is_recorded_as_failed(
    client, february, in_march, monkeypatch
):
    def broken(report):
        raise ValueError("no fonts")

    monkeypatch.setitem(closing.SNAPSHOT_RENDERERS, "pdf", broken)
    submit(client, february.finance)
    with pytest.raises(ValueError):  # raised again, for the worker's log
        month_close_run(MonthCloseRequest.objects.get().pk)
    failed = MonthCloseRequest.objects.get()
    assert (failed.status, failed.error) == (
        "failed",
        "February 2026 could not be closed: no fonts",
    )
    page = report(client)
    assert "February 2026 could not be closed: no fonts" in page.content.decode()
    assert status_on(page) == "failed" and not page.has_header("Refresh")

    def too_slow(report):
        raise SoftTimeLimitExceeded()

    monkeypatch.setitem(closing.SNAPSHOT_RENDERERS, "pdf", too_slow)
    submit(client, february.finance)  # the form is offered again, and works
    late = month_close_run(MonthCloseRequest.objects.get(status="queued").pk)
    assert (late.status, late.error) == (
        "failed",
        "February 2026 could not be closed: it ran past its time limit (5 minutes).",
    )
    assert not MonthClose.objects.exists()


def test_a_month_closed_while_the_request_waited_is_said_on_the_closed_report(
    client, february, in_march
):
    submit(client, february.finance)
    in_march.shift(timedelta(minutes=1))
    month_close(month=FEBRUARY, user=february.admin)  # e.g. from a shell
    in_march.shift(timedelta(minutes=1))
    request = month_close_run(MonthCloseRequest.objects.get().pk)

    assert request.status == "failed"
    assert request.error == (
        f"February 2026 is already closed, by {february.admin} "
        "on 10 March 2026 at 09:01 UTC."
    )
    assert MonthClose.objects.count() == 1
    page = report(client)
    assert status_on(page) == "failed"
    assert "February 2026 is already closed, by" in page.content.decode()
    assert 'data-testid="report-status">Closed<' in page.content.decode()


def test_a_close_no_worker_took_up_is_given_up_after_ten_minutes(
    client, february, in_march
):
    submit(client, february.finance)
    stale = MonthCloseRequest.objects.get()
    in_march.shift(MonthCloseRequest.GIVEN_UP_AFTER - timedelta(seconds=1))
    assert report(client)["Refresh"] == "5"
    refused = submit(client, february.admin)
    assert messages_of(refused) == [
        f"February 2026 is already being closed: {february.finance} asked at 09:00 UTC."
    ]

    in_march.shift(timedelta(seconds=2))
    page = report(client)
    assert not page.has_header("Refresh")
    assert status_on(page) == "given-up"
    html = page.content.decode()
    assert "No worker took up this close within 10 minutes" in html
    assert 'data-testid="close-form"' in html
    # A worker that comes now leaves it alone: finance asks again instead.
    assert month_close_run(stale.pk).status == "queued"
    assert not MonthClose.objects.exists()

    submit(client, february.admin)
    stale.refresh_from_db()
    assert stale.status == "failed"
    assert stale.error.startswith("No worker took up this close within 10 minutes")
    again = MonthCloseRequest.objects.get(status="queued")
    assert month_close_run(again.pk).status == "closed"
    assert MonthClose.objects.get().closed_by == february.admin


def test_a_close_whose_worker_stopped_is_given_up_ten_minutes_after_it_began(
    client, february, in_march
):
    submit(client, february.finance)
    # What a worker killed while closing leaves: taken up, never finished.
    MonthCloseRequest.objects.update(status="running", started_at=IN_MARCH)
    in_march.shift(MonthCloseRequest.GIVEN_UP_AFTER - timedelta(seconds=1))
    assert status_on(report(client)) == "running"
    in_march.shift(timedelta(seconds=2))
    page = report(client)
    assert not page.has_header("Refresh")
    assert status_on(page) == "given-up"
    assert "has not finished within 10 minutes" in page.content.decode()

    submit(client, february.finance)
    assert MonthCloseRequest.objects.filter(status="queued").count() == 1


def test_two_submits_at_once_make_one_close_request(
    transactional_db, february, eager_tasks, in_march
):
    """Two requests in threads with their own PostgreSQL sessions, held at their
    INSERT of the close request until both have passed the checks: one queues the
    close (run at once here, in its thread), the other hears that it is under way."""
    assert connection.vendor == "postgresql"
    barrier = threading.Barrier(2)
    said: list[list[str]] = []
    errors: list[BaseException] = []

    def hold_at_the_insert(execute, sql, params, many, context):
        if sql.startswith('INSERT INTO "reports_monthcloserequest"'):
            barrier.wait(timeout=30)
        return execute(sql, params, many, context)

    def submitter(user) -> None:
        try:
            with connection.execute_wrapper(hold_at_the_insert):
                said.append(messages_of(submit(Client(), user, "board pack")))
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [
        threading.Thread(target=submitter, args=(user,))
        for user in (february.finance, february.admin)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert sorted(message.split(":")[0] for [message] in said) == [
        "February 2026 is already being closed",
        "February 2026 is being closed",
    ]
    request = MonthCloseRequest.objects.get()
    assert request.status == "closed"
    assert MonthClose.objects.get() == request.close


@pytest.mark.parametrize("persona", ["anonymous", *PERSONAS])
def test_only_finance_and_admins_queue_a_close(client, february, in_march, persona):
    if persona != "anonymous":
        client.force_login(getattr(february, persona))
    response = client.post(reverse("month_close", args=[FEBRUARY]), {"reason": ""})
    closer = persona in {"finance", "admin"}
    assert response.status_code == {"lead": 403, "member": 403, "outsider": 403}.get(
        persona, 302
    )
    assert MonthCloseRequest.objects.filter(status="queued").exists() == closer
    assert not MonthClose.objects.exists()


@pytest.mark.parametrize("persona", PERSONAS)
def test_each_persona_reads_the_report_while_its_close_is_under_way(
    client, february, in_march, persona
):
    """Finance sees the close under way (the page reloads itself); the others read
    the open report as before."""
    submit(client, february.finance)
    client.force_login(getattr(february, persona))
    page = report(client)
    closer = persona in {"finance", "admin"}
    assert page.status_code == 200
    assert page.has_header("Refresh") == closer
    assert status_on(page) == ("queued" if closer else None)


@pytest.fixture
def workers(transactional_db, tmp_path):
    workers = Workers(tmp_path)
    yield workers
    workers.stop()


@pytest.fixture
def tasks_to_the_workers(workers):
    """What this process queues goes to the test's workers, not the shared queue,
    through the project's app (the workers' client app became the current one)."""
    app.set_current()
    shared = app.conf.task_default_queue
    app.conf.task_default_queue = workers.queue
    _forget_the_default_queue()
    yield
    app.conf.task_default_queue = shared
    _forget_the_default_queue()


def _forget_the_default_queue() -> None:
    """Celery keeps the default queue, and the router that holds it, from their first
    use: without this, the tests after this one would queue to this test's queue."""
    for cached in ("default_queue", "queues", "router"):
        app.amqp.__dict__.pop(cached, None)


def test_a_real_worker_closes_the_month_asked_for_on_the_report(
    workers, tasks_to_the_workers, february, client
):
    """The form's task goes through Redis to a worker process, which closes the
    month; both run on the real clock (February 2026 has ended)."""
    workers.start("one")
    assert submit(client, february.finance).status_code == 302
    request = MonthCloseRequest.objects.get()

    def finished() -> bool:
        request.refresh_from_db()
        return request.status not in MonthCloseRequest.PENDING

    assert wait_for(finished, 120), "no worker closed the month"
    assert (request.status, request.error) == ("closed", "")
    close = MonthClose.objects.get()
    assert (request.close, close.closed_by) == (close, february.finance)
    assert close.files.count() == 5
    assert 'data-testid="report-status">Closed<' in report(client).content.decode()
