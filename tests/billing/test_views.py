"""The billing pages finance and admins use: upload with progress, history, sources."""

from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from billing.models import BillingSource, CostRecord, ImportRun
from tests.data import FOCUS_REAL

pytestmark = pytest.mark.django_db

SAMPLE = FOCUS_REAL


@pytest.fixture
def finance_client(client, world, settings, tmp_path, eager_tasks):
    settings.MEDIA_ROOT = tmp_path
    client.force_login(world.finance)
    return client


def upload(client, content: bytes, name: str = "focus.csv", source: str = "FOCUS"):
    return client.post(
        reverse("upload"),
        {
            "file": SimpleUploadedFile(name, content, content_type="text/csv"),
            "source": source,
            "file_format": "auto",
        },
        HTTP_ACCEPT="application/json",
    )


def test_an_uploaded_export_is_kept_imported_and_followable(
    finance_client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = upload(finance_client, SAMPLE.read_bytes())
    assert response.status_code == 202
    status = finance_client.get(response.json()["status_url"]).json()
    assert (status["status"], status["rows"], status["error"]) == (
        "imported",
        1000,
        None,
    )
    run = ImportRun.objects.get(pk=response.json()["run"])
    assert Path(run.upload.path).read_bytes() == SAMPLE.read_bytes()
    assert CostRecord.objects.filter(import_run=run).count() == 1000
    page = finance_client.get(status["url"]).content.decode()
    assert "20.52022672899" in page  # the exact billed total, as the file has it


def test_an_unrecognised_file_fails_at_once_with_the_reason(
    finance_client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = upload(finance_client, b"date,amount\n2026-01-01,5\n", "odd.csv")
    status = finance_client.get(response.json()["status_url"]).json()
    assert status["status"] == "failed"
    assert "odd.csv: the format could not be detected" in status["error"]
    assert BillingSource.objects.get(name="FOCUS").last_error == status["error"]


def test_an_upload_without_a_file_is_refused_with_the_field_named(finance_client):
    response = finance_client.post(
        reverse("upload"), {"source": "x", "file_format": "auto"}
    )
    assert response.status_code == 400
    assert "file" in response.json()["errors"]


def test_the_history_and_the_source_page_show_failures(finance_client, world):
    world.import_run.status = ImportRun.Status.FAILED
    world.import_run.error = "cur.csv, row 7, column BilledCost: 'abc' is not a number"
    world.import_run.save()
    world.source.last_error = world.import_run.error
    world.source.save()
    history = finance_client.get(reverse("import_list")).content.decode()
    source_page = finance_client.get(world.source.get_absolute_url()).content.decode()
    assert "row 7, column BilledCost" in history
    assert "row 7, column BilledCost" in source_page


def test_stored_credentials_are_never_shown_in_full(finance_client, world):
    world.source.credentials = {"api_key": "sk-admin-1234567890abcdef"}
    world.source.save()
    page = finance_client.get(world.source.get_absolute_url()).content.decode()
    assert "sk-…cdef" in page
    assert "1234567890" not in page
