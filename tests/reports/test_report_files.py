"""A month's PDF is drawn by a worker, never in the web request: the download answers
at once with a page that reloads itself until the file is ready, then offers it."""

import io
from datetime import UTC, date, datetime, timedelta

import pytest
from django.urls import reverse
from pypdf import PdfReader

from reports import files
from reports.files import report_file_render
from reports.models import ReportFile
from tests.budgets.test_alert_workers import Workers, wait_for
from tests.conftest import make_spend

FEBRUARY = date(2026, 2, 1)


def text_of(content: bytes) -> str:
    return "\n".join(
        page.extract_text() for page in PdfReader(io.BytesIO(content)).pages
    )


def ask_for_pdf(client, user, capture) -> ReportFile:
    client.force_login(user)
    with capture() as queued:
        response = client.get(reverse("report_export_pdf", args=[FEBRUARY]))
    file = ReportFile.objects.get(user=user)
    assert response.status_code == 302
    assert response.url == reverse("report_file", args=[FEBRUARY, file.pk])
    assert len(queued) == 1  # the worker's task, queued once the request commits
    return file


@pytest.mark.django_db
def test_the_pdf_download_waits_for_a_worker_then_offers_the_file(
    client, world, time_machine, django_capture_on_commit_callbacks
):
    time_machine.move_to(datetime(2026, 3, 10, 9, tzinfo=UTC), tick=False)
    make_spend(world.project, date(2026, 2, 3), "100")
    make_spend(world.other_project, date(2026, 2, 4), "40")
    file = ask_for_pdf(client, world.lead, django_capture_on_commit_callbacks)
    url = reverse("report_file", args=[FEBRUARY, file.pk])

    waiting = client.get(url)
    assert waiting["Refresh"] == "2"
    assert 'data-status="queued"' in waiting.content.decode()
    assert client.get(url, {"download": 1})["Content-Type"].startswith("text/html")

    report_file_render(file.pk)  # the worker's task

    ready = client.get(url)
    assert not ready.has_header("Refresh")
    assert "?download=1" in ready.content.decode()
    download = client.get(url, {"download": 1})
    assert download["Content-Type"] == "application/pdf"
    assert download["Content-Disposition"] == (
        'attachment; filename="spendtracker-2026-02-report.pdf"'
    )
    text = text_of(download.content)
    assert world.project.name in text
    assert world.other_project.name not in text  # the lead's teams only


@pytest.mark.django_db
def test_a_file_that_fails_says_why_and_offers_to_try_again(
    client, world, time_machine, monkeypatch, django_capture_on_commit_callbacks
):
    time_machine.move_to(datetime(2026, 3, 10, 9, tzinfo=UTC), tick=False)
    file = ask_for_pdf(client, world.finance, django_capture_on_commit_callbacks)

    def broken(report):
        raise ValueError("no fonts")

    monkeypatch.setitem(files.RENDERERS, "pdf", broken)
    with pytest.raises(ValueError):
        report_file_render(file.pk)

    page = client.get(reverse("report_file", args=[FEBRUARY, file.pk]))
    assert not page.has_header("Refresh")
    assert "The report could not be drawn: no fonts" in page.content.decode()
    assert reverse("report_export_pdf", args=[FEBRUARY]) in page.content.decode()


@pytest.mark.django_db
def test_a_file_no_worker_drew_is_given_up_with_a_clear_message(
    client, world, time_machine, django_capture_on_commit_callbacks
):
    time_machine.move_to(datetime(2026, 3, 10, 9, tzinfo=UTC), tick=False)
    file = ask_for_pdf(client, world.finance, django_capture_on_commit_callbacks)
    url = reverse("report_file", args=[FEBRUARY, file.pk])
    time_machine.shift(ReportFile.GIVEN_UP_AFTER - timedelta(seconds=1))
    assert client.get(url).has_header("Refresh")
    time_machine.shift(timedelta(seconds=2))
    page = client.get(url)
    assert not page.has_header("Refresh")
    assert 'data-status="given-up"' in page.content.decode()


@pytest.fixture
def workers(transactional_db, tmp_path):
    workers = Workers(tmp_path)
    yield workers
    workers.stop()


def test_a_real_worker_draws_the_pdf(workers, world):
    make_spend(world.project, date(2026, 2, 3), "100")
    file = ReportFile.objects.create(user=world.finance, month=FEBRUARY, format="pdf")
    workers.start("one")
    workers.send("reports.tasks.report_file_render_task", file.pk)

    def drawn() -> bool:
        file.refresh_from_db()
        return file.status != ReportFile.Status.QUEUED

    assert wait_for(drawn), "no worker drew the file"
    assert (file.status, file.error) == (ReportFile.Status.READY, "")
    assert world.project.name in text_of(bytes(file.content))
