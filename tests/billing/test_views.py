"""The billing pages finance and admins use: upload with progress, history, sources."""

import csv
import html
import io
import zipfile
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from billing.explorer import explorer_url
from billing.models import BillingSource, CostRecord, ImportRun
from core.currencies import money
from projects.models import AllocationRule
from tests.conftest import make_budget, make_cost_record
from tests.data import AWS_CUR_LEGACY, FOCUS_REAL

pytestmark = pytest.mark.django_db

SAMPLE = FOCUS_REAL


@pytest.fixture
def finance_client(client, world, settings, tmp_path, eager_tasks):
    settings.MEDIA_ROOT = tmp_path
    client.force_login(world.finance)
    return client


def upload(
    client,
    content: bytes,
    name: str = "focus.csv",
    source: str = "FOCUS",
    **fields,
):
    return upload_files(client, {name: content}, source, **fields)


def upload_files(client, files: dict[str, bytes], source: str = "FOCUS", **fields):
    """Post a delivery as the upload page does: several files in one field, to the
    source of that name chosen from the list, or to a new FOCUS source of that name."""
    return client.post(
        reverse("upload"),
        {
            "file": [
                SimpleUploadedFile(name, content, content_type="text/csv")
                for name, content in files.items()
            ],
            **source_fields(source),
            "file_format": "auto",
            **fields,
        },
        HTTP_ACCEPT="application/json",
    )


def source_fields(name: str) -> dict[str, str]:
    existing = BillingSource.objects.filter(name=name).first()
    if existing:
        return {"source": str(existing.pk)}
    return {"source": "new", "new_source_name": name, "new_source_kind": "focus"}


LINES = SAMPLE.read_bytes().splitlines(keepends=True)
# The real sample split in two files, as an exporter splits a month.
PART_1 = b"".join(LINES[:501])
PART_2 = LINES[0] + b"".join(LINES[501:])


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
    # The new source was created on purpose: it stays, saying what went wrong.
    source = BillingSource.objects.get(name="FOCUS")
    assert "odd.csv: the format could not be detected" in source.last_error
    page = finance_client.get(status["url"]).content.decode()
    assert "odd.csv: the format could not be detected" in page


def test_an_upload_without_a_file_is_refused_with_the_field_named(finance_client):
    response = finance_client.post(
        reverse("upload"), {**source_fields("x"), "file_format": "auto"}
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
    assert "…cdef" in page
    assert "sk-" not in page
    assert "1234567890" not in page


def test_several_files_upload_as_one_delivery_and_keep_every_row(
    finance_client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = upload_files(
            finance_client, {"part-1.csv": PART_1, "part-2.csv": PART_2}
        )
    assert response.status_code == 202
    status = finance_client.get(response.json()["status_url"]).json()
    assert (status["status"], status["rows"], status["error"]) == (
        "imported",
        1000,
        None,
    )
    run = ImportRun.objects.get(pk=response.json()["run"])
    assert run.file_name == "part-1.csv, part-2.csv"
    with zipfile.ZipFile(run.upload.path) as kept:  # the delivery, kept for audit
        assert kept.read("part-1.csv") == PART_1
        assert kept.read("part-2.csv") == PART_2
    page = finance_client.get(status["url"]).content.decode()
    assert "20.52022672899" in page  # the whole file's billed total
    assert "part-2.csv" in page


def test_the_same_file_chosen_twice_is_refused_before_upload(finance_client):
    response = finance_client.post(
        reverse("upload"),
        {
            "file": [SimpleUploadedFile("a.csv", PART_1) for _ in range(2)],
            **source_fields("FOCUS"),
            "file_format": "auto",
        },
    )
    assert response.status_code == 400
    assert "a.csv is chosen twice" in response.json()["errors"]["file"][0]


def test_the_page_of_an_import_says_what_it_replaced_and_warns(
    finance_client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        upload(finance_client, PART_1, "part-1.csv")
        response = upload(finance_client, PART_2, "part-2.csv")
    run = ImportRun.objects.get(pk=response.json()["run"])
    assert run.replaced["rows"] == 500
    [warning] = run.warnings
    page = finance_client.get(run.get_absolute_url()).content.decode()
    assert "Warnings" in page
    assert html.escape(warning) in page
    removed = Decimal(run.replaced["billed"]["USD"])
    assert f"{removed.normalize():f} USD" in page  # the money removed, its currency
    history = finance_client.get(reverse("import_list")).content.decode()
    assert "1 warning" in history


def test_an_overlap_is_refused_unless_the_box_is_ticked(
    finance_client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        upload(finance_client, SAMPLE.read_bytes(), source="AWS FOCUS")
        refused = upload(finance_client, SAMPLE.read_bytes(), source="Copy")
    status = finance_client.get(refused.json()["status_url"]).json()
    assert status["status"] == "failed"
    assert "already imported into the source 'AWS FOCUS'" in status["error"]
    assert not CostRecord.objects.filter(source__name="Copy").exists()
    page = finance_client.get(reverse("upload")).content.decode()
    assert 'name="allow_overlap"' in page
    with django_capture_on_commit_callbacks(execute=True):
        allowed = upload(
            finance_client, SAMPLE.read_bytes(), source="Copy", allow_overlap="on"
        )
    status = finance_client.get(allowed.json()["status_url"]).json()
    assert (status["status"], status["rows"]) == ("imported", 1000)


def test_an_upload_goes_to_the_source_chosen_from_the_list(
    finance_client, world, django_capture_on_commit_callbacks
):
    sources_before = BillingSource.objects.count()
    with django_capture_on_commit_callbacks(execute=True):
        response = upload(finance_client, SAMPLE.read_bytes(), source="AWS export")
    assert response.status_code == 202
    run = ImportRun.objects.get(pk=response.json()["run"])
    assert (run.source, run.status) == (world.source, ImportRun.Status.IMPORTED)
    assert BillingSource.objects.count() == sources_before
    assert CostRecord.objects.filter(source=world.source, import_run=run).count()
    # The source page's button opens the upload with that source chosen.
    page = finance_client.get(f"{reverse('upload')}?source={world.source.pk}")
    assert f'<option value="{world.source.pk}" selected>' in page.content.decode()


def test_a_typed_name_never_creates_a_source(finance_client, world):
    sources_before = BillingSource.objects.count()
    typo = finance_client.post(
        reverse("upload"),
        {
            "file": SimpleUploadedFile("focus.csv", SAMPLE.read_bytes()),
            "source": "AWS exprot",  # what the old free-text field took
            "file_format": "auto",
        },
    )
    assert typo.status_code == 400
    assert "source" in typo.json()["errors"]
    assert BillingSource.objects.count() == sources_before
    assert not ImportRun.objects.exclude(pk=world.import_run.pk).exists()


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"new_source_kind": "focus"}, "new_source_name", "Name the new source."),
        ({"new_source_name": "GPU cloud"}, "new_source_kind", "Choose what kind"),
        (
            {"new_source_name": " aws EXPORT ", "new_source_kind": "focus"},
            "new_source_name",
            "A source named “AWS export” exists already: choose it from the list.",
        ),
    ],
)
def test_a_new_source_needs_a_name_of_its_own_and_a_kind(
    finance_client, world, fields, field, message
):
    sources_before = BillingSource.objects.count()
    response = finance_client.post(
        reverse("upload"),
        {
            "file": SimpleUploadedFile("focus.csv", SAMPLE.read_bytes()),
            "source": "new",
            "file_format": "auto",
            **fields,
        },
    )
    assert response.status_code == 400
    assert message in " ".join(response.json()["errors"][field])
    assert BillingSource.objects.count() == sources_before


def test_a_new_source_is_created_with_its_name_and_kind_and_imported_into(
    finance_client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = finance_client.post(
            reverse("upload"),
            {
                "file": SimpleUploadedFile("focus.csv", SAMPLE.read_bytes()),
                "source": "new",
                "new_source_name": " GPU cloud ",
                "new_source_kind": "focus",
                "file_format": "auto",
            },
        )
    assert response.status_code == 202
    source = BillingSource.objects.get(name="GPU cloud")
    assert source.kind == "focus"
    run = ImportRun.objects.get(pk=response.json()["run"])
    assert (run.source, run.status, run.rows_loaded) == (source, "imported", 1000)


def typo_source(failed_upload: bytes | None = None) -> BillingSource:
    """A source a typo created, whose only import failed."""
    source = BillingSource.objects.create(name="AWS exprot", kind="focus")
    run = ImportRun.objects.create(
        source=source, status=ImportRun.Status.FAILED, error="focus.csv: bad"
    )
    if failed_upload is not None:
        run.upload.save("focus.csv", ContentFile(failed_upload))
    return source


def test_finance_deletes_a_source_that_holds_no_data_with_its_failed_imports(
    finance_client, django_capture_on_commit_callbacks
):
    source = typo_source(failed_upload=b"date,amount\n")
    kept = Path(ImportRun.objects.get(source=source).upload.path)
    page = finance_client.get(reverse("source_delete", args=[source.pk]))
    assert page.status_code == 200
    assert "Its 1 failed import and its uploaded file are deleted" in (
        page.content.decode()
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = finance_client.post(reverse("source_delete", args=[source.pk]))
    assert response.status_code == 302
    assert response["Location"] == reverse("source_list")
    assert not BillingSource.objects.filter(pk=source.pk).exists()
    assert not ImportRun.objects.filter(source_name="AWS exprot").exists()
    assert not kept.exists()
    listing = finance_client.get(response["Location"]).content.decode()
    assert "The source “AWS exprot” was deleted." in listing


def loaded_import(source: BillingSource) -> None:
    ImportRun.objects.create(
        source=source, status=ImportRun.Status.IMPORTED, billing_periods=["2026-01"]
    )


def cost_lines(source: BillingSource) -> None:
    make_cost_record(date(2026, 1, 5), "1.25", source=source)


def running_import(source: BillingSource) -> None:
    ImportRun.objects.create(source=source)


@pytest.mark.parametrize(
    ("holding", "reason"),
    [
        (cost_lines, "“AWS exprot” holds cost data"),
        (loaded_import, "“AWS exprot” has 1 import that loaded data"),
        (running_import, "An import into “AWS exprot” is waiting or under way."),
    ],
)
def test_a_source_that_holds_data_is_never_deleted_and_says_why(
    finance_client, holding, reason
):
    source = typo_source()
    holding(source)
    page = finance_client.get(reverse("source_delete", args=[source.pk]))
    assert reason in page.content.decode()
    assert "<form" not in page.content.decode().split("<main")[-1]
    response = finance_client.post(reverse("source_delete", args=[source.pk]))
    assert response.status_code == 409
    assert f"This source cannot be deleted: {reason}" in response.content.decode()
    assert BillingSource.objects.filter(pk=source.pk).exists()
    assert ImportRun.objects.filter(source=source).count() >= 1


@pytest.mark.parametrize(
    ("persona", "status"),
    [
        ("anonymous", 302),
        ("lead", 403),
        ("member", 403),
        ("outsider", 403),
        ("finance", 302),
        ("admin", 302),
    ],
)
def test_only_finance_and_admins_delete_a_source(client, world, persona, status):
    source = typo_source()
    if persona != "anonymous":
        client.force_login(getattr(world, persona))
    response = client.post(reverse("source_delete", args=[source.pk]))
    assert response.status_code == status
    deleted = not BillingSource.objects.filter(pk=source.pk).exists()
    assert deleted == (persona in ("finance", "admin"))
    if persona == "anonymous":
        assert response["Location"].startswith(reverse("login"))


def test_an_uploads_errors_name_its_own_file_and_no_command_line_flags(
    finance_client, django_capture_on_commit_callbacks
):
    # Storage would keep this file as my_costs_Dec.csv; its owner knows it so.
    name = "my costs (Dec).csv"
    with django_capture_on_commit_callbacks(execute=True):
        response = upload(finance_client, b"date,amount\n2026-01-01,5\n", name)
    run = ImportRun.objects.get(pk=response.json()["run"])
    assert Path(run.upload.path).name != name
    assert run.error == (
        f"{name}: the format could not be detected from the header: choose its format"
    )
    page = finance_client.get(run.get_absolute_url()).content.decode()
    assert html.escape(run.error) in page


def test_a_header_only_upload_asks_for_its_billing_month_in_the_forms_words(
    finance_client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        refused = upload(finance_client, LINES[0], "empty month.csv")
    run = ImportRun.objects.get(pk=refused.json()["run"])
    assert run.error == (
        "empty month.csv: has a header but no cost rows; if it is a month without "
        "charges, give its billing month"
    )
    assert "--" not in run.error
    form = finance_client.get(reverse("upload")).content.decode()
    assert "Billing month" in form
    with django_capture_on_commit_callbacks(execute=True):
        given = upload(finance_client, LINES[0], "empty month.csv", period="2024-09")
    run = ImportRun.objects.get(pk=given.json()["run"])
    assert (run.status, run.billing_periods) == ("imported", ["2024-09"])


def test_a_file_of_several_uploaded_is_named_alone_not_as_a_member_of_a_zip(
    finance_client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = upload_files(
            finance_client, {"part-1.csv": PART_1, "part 2.csv": b"date,amount\n"}
        )
    run = ImportRun.objects.get(pk=response.json()["run"])
    assert run.status == "failed"
    assert run.error.startswith("part 2.csv: ")
    assert "delivery.zip" not in run.error
    assert [file["name"] for file in run.files] == ["part 2.csv", "part-1.csv"]


def file_effective_cost(*, service: str | None = None, other: bool = False) -> Decimal:
    """The file's effective cost of one service's rows (or of every other row)."""
    rows = csv.DictReader(io.StringIO(SAMPLE.read_text()))
    return sum(
        (
            Decimal(row["EffectiveCost"])
            for row in rows
            if service is None or (row["ServiceName"] == service) != other
        ),
        Decimal(0),
    )


EC2 = "Amazon Elastic Compute Cloud"


def test_the_import_page_links_to_where_the_data_went_with_money_in_its_currency(
    finance_client, world, django_capture_on_commit_callbacks, time_machine
):
    time_machine.move_to(datetime(2026, 1, 15, 12, tzinfo=UTC))
    AllocationRule.objects.create(
        project=world.project, priority=1, match_on="service", value=EC2
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = upload(finance_client, SAMPLE.read_bytes(), source="AWS export")
    run = ImportRun.objects.get(pk=response.json()["run"])
    assert run.billing_periods == ["2024-09", "2024-10"]
    page = finance_client.get(run.get_absolute_url()).content.decode()
    for month in (date(2024, 9, 1), date(2024, 10, 1)):
        assert reverse("report_detail", args=[month]) in page
        explorer = explorer_url(month=month, source=world.source, group_by="project")
        assert html.escape(explorer) in page
    where = page.split('data-testid="import-destinations"')[1].split("</section>")[0]
    # Amounts computed from the file itself: EC2 went to the project, the rest not.
    project_row = (
        f'<a href="{world.project.get_absolute_url()}">{world.project.name}</a></td>'
        f'<td class="num">{money(file_effective_cost(service=EC2), "USD", places=2)}'
    )
    assert project_row in where
    unallocated = money(file_effective_cost(service=EC2, other=True), "USD", places=2)
    assert f'>Unallocated</a></td><td class="num">{unallocated}<' in where
    assert "project=%28none%29" in where
    assert "20.52022672899 USD" in page  # the exact billed total, with its currency


def test_the_import_page_warns_of_the_months_no_budget_covers(
    finance_client, world, django_capture_on_commit_callbacks, time_machine
):
    time_machine.move_to(datetime(2026, 1, 15, 12, tzinfo=UTC))
    with django_capture_on_commit_callbacks(execute=True):
        response = upload(finance_client, SAMPLE.read_bytes(), source="AWS export")
    run = ImportRun.objects.get(pk=response.json()["run"])
    page = finance_client.get(run.get_absolute_url()).content.decode()
    # The world's only budget plans 2026: both months of the file are bare.
    assert "Months no budget covers:</strong> September 2024, October 2024." in page
    world.other_project.start_date = date(2024, 9, 1)
    world.other_project.end_date = date(2024, 9, 30)
    world.other_project.save()
    make_budget(world.other_project, {date(2024, 9, 1): "500.00"})
    page = finance_client.get(run.get_absolute_url()).content.decode()
    assert "Months no budget covers:</strong> October 2024." in page
    world.other_project.budget.end_date = date(2024, 10, 1)
    world.other_project.budget.save()
    page = finance_client.get(run.get_absolute_url()).content.decode()
    assert "Months no budget covers" not in page
    world.other_project.status = "cancelled"
    world.other_project.save()
    page = finance_client.get(run.get_absolute_url()).content.decode()
    assert "September 2024, October 2024." in page


@pytest.fixture
def unreadable(world, settings):
    """Credentials stored with a key the deployment no longer has."""
    world.source.credentials = {"api_key": "sk-admin-1234567890abcdef"}
    world.source.save()
    settings.FIELD_ENCRYPTION_KEY = Fernet.generate_key().decode()
    return world.source


@pytest.mark.parametrize("key", ["another", "missing"])
def test_credentials_no_key_reads_are_said_to_be_unreadable_not_a_500(
    client, world, unreadable, settings, key
):
    if key == "missing":
        settings.FIELD_ENCRYPTION_KEY = ""
    client.force_login(world.admin)
    admin_url = reverse("admin:billing_billingsource_change", args=[unreadable.pk])
    edit_url = reverse("source_edit", args=[unreadable.pk])
    for url in (unreadable.get_absolute_url(), admin_url, edit_url):
        page = client.get(url)
        assert page.status_code == 200
        assert "credentials unreadable, enter them again" in page.content.decode()
    changelist = reverse("admin:billing_billingsource_changelist")
    assert client.get(changelist).status_code == 200


def test_an_admin_replaces_credentials_no_key_reads(client, world, unreadable):
    client.force_login(world.admin)
    url = reverse("admin:billing_billingsource_change", args=[unreadable.pk])
    response = client.post(
        url,
        {
            "name": unreadable.name,
            "kind": unreadable.kind,
            "config": "{}",
            "sync_every_minutes": "360",
            "new_credentials": '{"api_key": "sk-admin-new-0000000000wxyz"}',
        },
    )
    assert response.status_code == 302
    unreadable.refresh_from_db()
    assert unreadable.credentials == {"api_key": "sk-admin-new-0000000000wxyz"}
    assert "…wxyz" in client.get(url).content.decode()


def test_without_a_key_new_credentials_are_refused_with_the_reason(
    client, world, settings
):
    settings.FIELD_ENCRYPTION_KEY = ""
    client.force_login(world.admin)
    url = reverse("admin:billing_billingsource_change", args=[world.source.pk])
    response = client.post(
        url,
        {
            "name": world.source.name,
            "kind": world.source.kind,
            "config": "{}",
            "sync_every_minutes": "360",
            "new_credentials": '{"api_key": "sk-admin-new-0000000000wxyz"}',
        },
    )
    assert response.context["adminform"].form.errors["new_credentials"] == [
        "FIELD_ENCRYPTION_KEY is not set: it is needed to store credentials."
    ]


@pytest.mark.parametrize("file_format", ["auto", "aws-cur"])
def test_an_upload_of_another_kind_never_changes_the_kind_of_its_source(
    finance_client, world, django_capture_on_commit_callbacks, file_format
):
    with django_capture_on_commit_callbacks(execute=True):
        response = upload(
            finance_client,
            AWS_CUR_LEGACY.read_bytes(),
            AWS_CUR_LEGACY.name,
            source="AWS export",  # a FOCUS source
            file_format=file_format,
        )
    status = finance_client.get(response.json()["status_url"]).json()
    assert status["status"] == "failed"
    assert (
        "but source 'AWS export' takes FOCUS export files: import it into "
        in (status["error"])
    )
    world.source.refresh_from_db()
    assert world.source.kind == BillingSource.Kind.FOCUS
    assert not CostRecord.objects.filter(import_run__pk=response.json()["run"])


def test_a_new_source_named_like_one_of_another_kind_is_refused(finance_client, world):
    response = upload(
        finance_client,
        AWS_CUR_LEGACY.read_bytes(),
        AWS_CUR_LEGACY.name,
        source="new",
        new_source_name="AWS EXPORT",
        new_source_kind="aws-cur",
    )
    assert response.status_code == 400
    assert response.json()["errors"]["new_source_name"] == [
        "A source named “AWS export” exists already: choose it from the list."
    ]
    world.source.refresh_from_db()
    assert world.source.kind == BillingSource.Kind.FOCUS
