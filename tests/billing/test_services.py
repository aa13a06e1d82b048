"""Allocation by ordered rules, and the DailyCost rollup with historical FX rates."""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from billing.models import BillingSource, CostRecord, DailyCost, FxRate
from billing.services import Allocator, cost_records_reallocate, daily_costs_rebuild
from projects.models import AllocationRule, TrainingRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def source(db):
    return BillingSource.objects.create(name="focus", kind=BillingSource.Kind.FOCUS)


def record(source, day=date(2026, 3, 5), amount="10.12345678901", **fields):
    start = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
    values = {
        "billing_account_id": "111",
        "billing_period_start": start.replace(day=1),
        "billing_period_end": start.replace(day=1) + timedelta(days=31),
        "charge_period_start": start,
        "charge_period_end": start + timedelta(hours=1),
        "charge_category": "Usage",
        "billed_cost": Decimal(amount),
        "effective_cost": Decimal(amount),
        "list_cost": Decimal(amount),
        "contracted_cost": Decimal(amount),
        "billing_currency": "USD",
        "provider_name": "AWS",
        "service_name": "Amazon EC2",
        **fields,
    }
    return CostRecord.objects.create(source=source, **values)


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
    run = TrainingRun.objects.create(
        project=world.project,
        name="sft",
        external_id="job-42",
        gpu_type="H100",
        gpu_count=8,
        planned_gpu_hours=Decimal("10"),
        rate_per_gpu_hour=Decimal("2"),
        start_date=date(2026, 1, 1),
        end_date=date(2026, 1, 31),
    )
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


def test_reallocation_moves_history_and_rebuilds_only_the_dates_touched(world, source):
    moved = record(source, day=date(2026, 3, 5), tags={"project": "llama"})
    record(source, day=date(2026, 4, 9), tags={"project": "other"})
    daily_costs_rebuild(start=date(2026, 3, 1), end=date(2026, 5, 1))
    april = DailyCost.objects.get(date=date(2026, 4, 9))
    rule(world.project, 1, AllocationRule.MatchOn.TAG, "llama", tag_key="project")

    assert cost_records_reallocate() == (date(2026, 3, 5), date(2026, 3, 6))

    moved.refresh_from_db()
    assert moved.project == world.project
    assert DailyCost.objects.get(date=date(2026, 3, 5)).project == world.project
    assert DailyCost.objects.get(date=date(2026, 4, 9)).pk == april.pk
    assert cost_records_reallocate() is None


def test_the_rollup_keeps_every_decimal_and_the_unallocated_spend(world, source):
    record(source, amount="0.00000080000")
    record(source, amount="10.12345678901")
    record(source, amount="-1.5", charge_category="Credit")
    daily_costs_rebuild(start=date(2026, 3, 1), end=date(2026, 4, 1))
    row = DailyCost.objects.get()
    assert row.project is None
    assert row.billed_cost == Decimal("8.62345758901")
    assert row.fx_rate == Decimal("1")


def test_the_rollup_converts_with_the_rate_in_force_on_the_charge_date(source):
    FxRate.objects.create(currency="EUR", date=date(2026, 1, 1), rate=Decimal("1.10"))
    FxRate.objects.create(currency="EUR", date=date(2026, 3, 10), rate=Decimal("1.20"))
    record(source, day=date(2026, 3, 9), amount="100", billing_currency="EUR")
    record(source, day=date(2026, 3, 10), amount="100", billing_currency="EUR")
    daily_costs_rebuild(start=date(2026, 3, 1), end=date(2026, 4, 1))
    rows = DailyCost.objects.order_by("date").values_list("fx_rate", "effective_cost")
    assert list(rows) == [
        (Decimal("1.10"), Decimal("110")),
        (Decimal("1.20"), Decimal("120")),
    ]


def test_spend_in_a_currency_without_a_rate_is_kept_unconverted(source):
    record(source, amount="50", billing_currency="JPY")
    daily_costs_rebuild(start=date(2026, 3, 1), end=date(2026, 4, 1))
    row = DailyCost.objects.get()
    assert row.fx_rate is None
    assert (row.billing_currency, row.effective_cost) == ("JPY", Decimal("50"))


def test_gpu_hours_are_summed_from_gpu_hour_units_only(source):
    record(source, consumed_quantity=Decimal("8"), consumed_unit="GPU-Hours")
    record(source, consumed_quantity=Decimal("3"), consumed_unit="gpu hours")
    record(source, consumed_quantity=Decimal("500"), consumed_unit="Requests")
    daily_costs_rebuild(start=date(2026, 3, 1), end=date(2026, 4, 1))
    assert DailyCost.objects.get().gpu_hours == Decimal("11")
