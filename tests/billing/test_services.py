"""Allocation by ordered rules, and the DailyCost rollup with historical FX rates."""

import threading
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection, transaction
from django.urls import reverse

from billing.allocation import Allocation, Allocator
from billing.models import BillingSource, CostRecord, DailyCost, FxRate, ImportRun
from billing.services import (
    NewSource,
    SourceHoldsData,
    allocation_preview,
    billing_source_delete,
    billing_upload_accept,
    cost_records_reallocate,
    daily_costs_rebuild,
    source_delete_refusal,
)
from projects.models import AllocationRule
from tests.conftest import make_cost_record, make_run
from tests.data import FOCUS_REAL

pytestmark = pytest.mark.django_db


def record(day=date(2026, 3, 5), amount="10.12345678901", **fields):
    return make_cost_record(day, amount, **fields)


def rule(project, priority, match_on, value, **extra):
    return AllocationRule.objects.create(
        project=project, priority=priority, match_on=match_on, value=value, **extra
    )


def test_the_first_matching_rule_wins(world):
    rule(world.other_project, 20, AllocationRule.MatchOn.SERVICE, "Amazon EC2")
    rule(world.project, 10, AllocationRule.MatchOn.TAG, "sft", tag_key="project")
    allocation = Allocator().allocate(
        {"tags": {"project": "sft"}, "service_name": "Amazon EC2"}
    )
    assert allocation.project_id == world.project.pk


@pytest.mark.parametrize(
    ("match_on", "value", "fields"),
    [
        ("billing_account", "111", {"billing_account_id": "111"}),
        ("sub_account", "222", {"sub_account_id": "222"}),
        (
            "resource_prefix",
            "arn:aws:sagemaker",
            {"resource_id": "arn:aws:sagemaker:x"},
        ),
        ("service", "Claude API", {"service_name": "Claude API"}),
    ],
)
def test_each_kind_of_rule_matches_its_column(world, match_on, value, fields):
    rule(world.project, 1, match_on, value)
    assert Allocator().allocate(fields).project_id == world.project.pk
    assert Allocator().allocate({"tags": {}}).project_id is None


def test_a_run_tag_names_the_run_of_the_matched_project(world):
    run = make_run(world.project, external_id="job-42")
    rule(
        world.project,
        1,
        AllocationRule.MatchOn.TAG,
        "llama",
        tag_key="project",
        run_tag_key="run",
    )
    allocator = Allocator()
    tagged = allocator.allocate({"tags": {"project": "llama", "run": "job-42"}})
    unknown_run = allocator.allocate({"tags": {"project": "llama", "run": "job-7"}})
    assert (tagged.project_id, tagged.training_run_id) == (world.project.pk, run.pk)
    assert (unknown_run.project_id, unknown_run.training_run_id) == (
        world.project.pk,
        None,
    )


def test_reallocation_moves_history_and_rebuilds_only_the_dates_touched(world):
    moved = record(day=date(2026, 3, 5), tags={"project": "llama"})
    record(day=date(2026, 4, 9), tags={"project": "other"})
    daily_costs_rebuild(start=date(2026, 3, 1), end=date(2026, 5, 1))
    april = DailyCost.objects.get(date=date(2026, 4, 9))
    rule(world.project, 1, AllocationRule.MatchOn.TAG, "llama", tag_key="project")

    assert cost_records_reallocate() == (date(2026, 3, 5), date(2026, 3, 6))

    moved.refresh_from_db()
    assert moved.project == world.project
    assert DailyCost.objects.get(date=date(2026, 3, 5)).project == world.project
    assert DailyCost.objects.get(date=date(2026, 4, 9)).pk == april.pk
    assert cost_records_reallocate() is None


def test_the_rollup_keeps_every_decimal_and_the_unallocated_spend(world):
    record(amount="0.00000080000")
    record(amount="10.12345678901")
    record(amount="-1.5", charge_category="Credit")
    daily_costs_rebuild(start=date(2026, 3, 1), end=date(2026, 4, 1))
    rows = DailyCost.objects.filter(project=None, fx_rate=Decimal("1"))
    by_category = dict(rows.values_list("charge_category", "billed_cost"))
    assert by_category == {
        "Usage": Decimal("10.12345758901"),
        "Credit": Decimal("-1.50000000000"),
    }
    assert DailyCost.objects.count() == 2


def test_the_rollup_converts_with_the_rate_in_force_on_the_charge_date():
    FxRate.objects.create(currency="EUR", date=date(2026, 1, 1), rate=Decimal("1.10"))
    FxRate.objects.create(currency="EUR", date=date(2026, 3, 10), rate=Decimal("1.20"))
    record(day=date(2026, 3, 9), amount="100", billing_currency="EUR")
    record(day=date(2026, 3, 10), amount="100", billing_currency="EUR")
    daily_costs_rebuild(start=date(2026, 3, 1), end=date(2026, 4, 1))
    rows = DailyCost.objects.order_by("date").values_list("fx_rate", "effective_cost")
    assert list(rows) == [
        (Decimal("1.10"), Decimal("110")),
        (Decimal("1.20"), Decimal("120")),
    ]


def test_spend_in_a_currency_without_a_rate_is_kept_unconverted():
    record(amount="50", billing_currency="JPY")
    daily_costs_rebuild(start=date(2026, 3, 1), end=date(2026, 4, 1))
    row = DailyCost.objects.get()
    assert row.fx_rate is None
    assert (row.billing_currency, row.effective_cost) == ("JPY", Decimal("50"))


def test_gpu_hours_are_summed_from_gpu_hour_units_only():
    record(consumed_quantity=Decimal("8"), consumed_unit="GPU-Hours")
    record(consumed_quantity=Decimal("3"), consumed_unit="gpu hours")
    record(consumed_quantity=Decimal("500"), consumed_unit="Requests")
    daily_costs_rebuild(start=date(2026, 3, 1), end=date(2026, 4, 1))
    assert DailyCost.objects.get().gpu_hours == Decimal("11")


def test_a_preview_shows_what_would_move_and_changes_nothing(world):
    record(tags={"project": "llama"}, amount="10.5")
    record(tags={"project": "llama"}, amount="2.25")
    rule(world.project, 1, AllocationRule.MatchOn.TAG, "llama", tag_key="project")
    moves = allocation_preview()
    assert [(m.from_project, m.to_project, m.rows, m.effective) for m in moves] == [
        ("(unallocated)", world.project.name, 2, {"USD": Decimal("12.75")})
    ]
    assert not CostRecord.objects.filter(project=world.project).exists()


def test_an_admin_previews_then_applies_a_reallocation(client, world):
    record(tags={"project": "llama"}, amount="10.5")
    new_rule = rule(
        world.project, 1, AllocationRule.MatchOn.TAG, "llama", tag_key="project"
    )
    client.force_login(world.admin)
    url = reverse("admin:projects_allocationrule_changelist")
    chosen = {"action": "reallocate_history", "_selected_action": [new_rule.pk]}
    preview = client.post(url, chosen)
    assert b"(unallocated)" in preview.content and b"$10.50" in preview.content
    assert not CostRecord.objects.filter(project=world.project).exists()
    client.post(url, {**chosen, "apply": "yes"})
    assert CostRecord.objects.filter(project=world.project).count() == 1


def test_a_cost_tagged_with_a_project_slug_goes_there_when_no_rule_matches(world):
    rule(world.other_project, 1, AllocationRule.MatchOn.SERVICE, "Claude API")
    allocator = Allocator()
    by_tag = allocator.allocate({"tags": {"project": world.project.slug}})
    by_rule = allocator.allocate(
        {"tags": {"project": world.project.slug}, "service_name": "Claude API"}
    )
    unknown = allocator.allocate({"tags": {"project": "no-such-project"}})
    assert by_tag.project_id == world.project.pk
    assert by_rule.project_id == world.other_project.pk  # rules come first
    assert unknown == Allocation(None, None)


def long_charge(begins: datetime, ends: datetime, amount: str, **fields):
    return make_cost_record(
        begins.date(),
        amount,
        charge_period_start=begins,
        charge_period_end=ends,
        **fields,
    )


def daily_amounts() -> dict[date, Decimal]:
    return dict(
        DailyCost.objects.order_by("date").values_list("date", "effective_cost")
    )


def test_a_monthly_fee_is_spread_over_the_days_it_covers(world):
    long_charge(
        datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC), "300"
    )
    daily_costs_rebuild(start=date(2026, 11, 1), end=date(2026, 11, 2))
    amounts = daily_amounts()
    assert len(amounts) == 30  # rebuilt through the fee's last day
    assert set(amounts.values()) == {Decimal("10")}


def test_shares_that_do_not_divide_evenly_still_add_up_exactly(world):
    long_charge(
        datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 4, tzinfo=UTC), "100"
    )
    daily_costs_rebuild(start=date(2026, 3, 1), end=date(2026, 3, 4))
    assert list(daily_amounts().values()) == [
        Decimal("33.33333333333"),
        Decimal("33.33333333333"),
        Decimal("33.33333333334"),
    ]


def test_part_days_get_their_part(world):
    long_charge(
        datetime(2026, 1, 30, 12, tzinfo=UTC),
        datetime(2026, 2, 2, 12, tzinfo=UTC),
        "60",
        consumed_quantity=Decimal("6"),
        consumed_unit="GPU-Hours",
    )
    daily_costs_rebuild(start=date(2026, 1, 30), end=date(2026, 2, 3))
    assert daily_amounts() == {
        date(2026, 1, 30): Decimal("10"),
        date(2026, 1, 31): Decimal("20"),
        date(2026, 2, 1): Decimal("20"),
        date(2026, 2, 2): Decimal("10"),
    }
    assert sum(DailyCost.objects.values_list("gpu_hours", flat=True)) == 6


def test_a_day_adds_its_short_charges_and_its_share_of_long_ones(world):
    make_cost_record(date(2026, 3, 2), "5", project=world.project)
    long_charge(
        datetime(2026, 3, 1, tzinfo=UTC),
        datetime(2026, 3, 3, tzinfo=UTC),
        "40",
        project=world.project,
    )
    daily_costs_rebuild(start=date(2026, 3, 2), end=date(2026, 3, 3))
    assert daily_amounts() == {date(2026, 3, 2): Decimal("25")}  # one row: 5 + 20


def test_a_charge_longer_than_a_quarter_counts_on_its_first_day(world):
    long_charge(
        datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 7, 1, tzinfo=UTC), "181"
    )
    daily_costs_rebuild(start=date(2026, 1, 1), end=date(2026, 7, 1))
    assert daily_amounts() == {date(2026, 1, 1): Decimal("181")}


def test_rebuilding_a_later_range_keeps_the_shares_of_an_earlier_charge(world):
    long_charge(
        datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC), "310"
    )
    daily_costs_rebuild(start=date(2026, 3, 1), end=date(2026, 4, 1))
    daily_costs_rebuild(start=date(2026, 3, 20), end=date(2026, 3, 21))
    assert len(daily_amounts()) == 31
    assert set(daily_amounts().values()) == {Decimal("10")}


def test_an_upload_to_a_new_source_creates_it_of_its_kind_and_a_taken_name_is_refused(
    settings, tmp_path
):
    settings.MEDIA_ROOT = tmp_path
    upload = SimpleUploadedFile("focus.csv", FOCUS_REAL.read_bytes())
    run = billing_upload_accept(
        uploaded=[upload], source=NewSource(name="GPU cloud", kind="focus")
    )
    assert (run.source.name, run.source.kind, run.upload_name) == (
        "GPU cloud",
        "focus",
        "focus.csv",
    )
    with pytest.raises(ValidationError, match="“GPU cloud” exists already"):
        billing_upload_accept(
            uploaded=[upload], source=NewSource(name="gpu CLOUD", kind="azure")
        )
    with pytest.raises(ValidationError, match="cannot be uploaded"):
        billing_upload_accept(
            uploaded=[upload], source=NewSource(name="Invoices", kind="compute-invoice")
        )
    assert list(BillingSource.objects.values_list("name", flat=True)) == ["GPU cloud"]


def test_a_source_without_data_is_deleted_with_its_failed_imports_only():
    source = BillingSource.objects.create(name="typo", kind="focus")
    ImportRun.objects.create(source=source, status=ImportRun.Status.FAILED)
    kept = BillingSource.objects.create(name="kept", kind="focus")
    ImportRun.objects.create(source=kept, status=ImportRun.Status.FAILED)
    assert source_delete_refusal(source) is None
    billing_source_delete(source=source)
    assert list(BillingSource.objects.values_list("name", flat=True)) == ["kept"]
    assert ImportRun.objects.get().source == kept
    make_cost_record(date(2026, 1, 5), "1.00", source=kept)
    with pytest.raises(SourceHoldsData, match="“kept” holds cost data"):
        billing_source_delete(source=kept)
    assert BillingSource.objects.filter(pk=kept.pk).exists()


def test_an_upload_to_a_source_deleted_meanwhile_is_refused_and_keeps_nothing(
    settings, tmp_path
):
    settings.MEDIA_ROOT = tmp_path
    source = BillingSource.objects.create(name="typo", kind="focus")
    chosen = BillingSource.objects.get(pk=source.pk)  # as the form found it
    billing_source_delete(source=source)
    upload = SimpleUploadedFile("focus.csv", FOCUS_REAL.read_bytes())
    with pytest.raises(ValidationError, match="“typo” no longer exists"):
        billing_upload_accept(uploaded=[upload], source=chosen)
    assert not ImportRun.objects.exists()
    assert not any(tmp_path.rglob("*.csv"))


@pytest.mark.django_db(transaction=True)
def test_a_delete_racing_an_upload_waits_for_it_then_refuses(settings, tmp_path):
    """The upload holds the source until it commits; the delete, started meanwhile,
    waits, then finds the upload's run and refuses. Without the hold the delete would
    win and the upload's commit fail on its missing source (a 500)."""
    settings.MEDIA_ROOT = tmp_path
    source = BillingSource.objects.create(name="typo", kind="focus")
    held, release = threading.Event(), threading.Event()
    outcome: dict[str, object] = {}

    def upload() -> None:
        try:
            with transaction.atomic():
                billing_upload_accept(
                    uploaded=[SimpleUploadedFile("a.csv", FOCUS_REAL.read_bytes())],
                    source=source,
                )
                held.set()
                release.wait(30)
            outcome["upload"] = "committed"
        except Exception as error:
            outcome["upload"] = error
        finally:
            connection.close()

    def delete() -> None:
        try:
            billing_source_delete(source=source)
            outcome["delete"] = "deleted"
        except Exception as error:
            outcome["delete"] = error
        finally:
            connection.close()

    uploader = threading.Thread(target=upload)
    uploader.start()
    assert held.wait(30)
    deleter = threading.Thread(target=delete)
    deleter.start()
    deleter.join(1)
    assert deleter.is_alive()  # waiting for the upload's transaction
    release.set()
    uploader.join(30)
    deleter.join(30)
    assert outcome["upload"] == "committed"
    assert isinstance(outcome["delete"], SourceHoldsData)
    assert "waiting or under way" in str(outcome["delete"])
    assert BillingSource.objects.filter(pk=source.pk).exists()
