"""Bad plans are refused with a message on the field, and nothing half-saved remains."""

from datetime import date
from decimal import Decimal

import pytest
from django.urls import reverse

from budgets.models import Budget, BudgetLine

pytestmark = pytest.mark.django_db


def plan_post(budget: Budget | None, lines: list[tuple[str, str]], **fields) -> dict:
    existing = list(budget.lines.all()) if budget else []
    data = {
        "total": "3000.00",
        "currency": "USD",
        "cost_measure": "effective_cost",
        "start_date": "2026-01-01",
        "end_date": "2026-12-31",
        "tolerance_percent": "10",
        "lines_must_sum_to_total": "on",
        "lines-TOTAL_FORMS": str(len(lines)),
        "lines-INITIAL_FORMS": str(len(existing)),
        "lines-MIN_NUM_FORMS": "0",
        "lines-MAX_NUM_FORMS": "1000",
        **fields,
    }
    for index, (month, amount) in enumerate(lines):
        data[f"lines-{index}-month"] = month
        data[f"lines-{index}-amount"] = amount
        data[f"lines-{index}-category"] = ""
        if index < len(existing):
            data[f"lines-{index}-id"] = str(existing[index].pk)
            data[f"lines-{index}-budget"] = str(budget.pk)
    return {k: v for k, v in data.items() if v is not None}


@pytest.fixture
def lead_client(client, world):
    client.force_login(world.lead)
    return client


def post_plan(client, world, data):
    return client.post(reverse("budget_edit", args=[world.project.slug]), data)


def snapshot(world):
    budget = Budget.objects.get(project=world.project)
    lines = list(budget.lines.values_list("month", "amount"))
    return budget.total, budget.end_date, lines


def test_a_lead_saves_a_plan_whose_lines_add_up(lead_client, world):
    data = plan_post(
        world.project.budget, [("2026-01", "1000.00"), ("2026-02", "2000.00")]
    )
    response = post_plan(lead_client, world, data)
    assert response.status_code == 302
    assert snapshot(world)[0] == Decimal("3000.00")


def test_a_changed_approved_budget_goes_back_to_finance(lead_client, world):
    Budget.objects.filter(pk=world.project.budget.pk).update(
        status=Budget.Status.APPROVED
    )
    data = plan_post(
        world.project.budget,
        [("2026-01", "1000.00"), ("2026-02", "2500.00")],
        total="3500.00",
    )
    post_plan(lead_client, world, data)
    assert Budget.objects.get(pk=world.project.budget.pk).status == Budget.Status.DRAFT


@pytest.mark.parametrize(
    ("fields", "lines", "field", "message"),
    [
        ({"total": "-5"}, [], "total", "A budget cannot be negative."),
        ({"currency": "XYZ"}, [], "currency", "XYZ is not an ISO 4217 currency code."),
        (
            {"end_date": "2025-12-01"},
            [],
            "end_date",
            "The budget must end after it starts.",
        ),
    ],
)
def test_bad_budget_fields_are_refused_on_the_field(
    lead_client, world, fields, lines, field, message
):
    before = snapshot(world)
    data = plan_post(
        world.project.budget,
        lines or [("2026-01", "1000.00"), ("2026-02", "2000.00")],
        **fields,
    )
    response = post_plan(lead_client, world, data)
    assert response.status_code == 200
    assert message in response.context["form"].errors[field]
    assert snapshot(world) == before


def test_a_negative_line_is_refused_on_its_amount(lead_client, world):
    before = snapshot(world)
    data = plan_post(
        world.project.budget, [("2026-01", "-1000.00"), ("2026-02", "4000.00")]
    )
    response = post_plan(lead_client, world, data)
    errors = response.context["lines"].forms[0].errors
    assert errors["amount"] == ["A planned amount cannot be negative."]
    assert snapshot(world) == before


def test_a_line_outside_the_budget_dates_is_refused_on_its_month(lead_client, world):
    before = snapshot(world)
    data = plan_post(
        world.project.budget,
        [("2026-01", "1000.00"), ("2026-02", "1000.00"), ("2027-03", "1000.00")],
    )
    response = post_plan(lead_client, world, data)
    errors = response.context["lines"].forms[2].errors
    assert errors["month"] == [
        "March 2027 is outside the budget (Jan 2026 to Dec 2026)."
    ]
    assert snapshot(world) == before


def test_lines_that_do_not_add_up_to_the_total_are_refused(lead_client, world):
    before = snapshot(world)
    data = plan_post(
        world.project.budget, [("2026-01", "1000.00"), ("2026-02", "1000.00")]
    )
    response = post_plan(lead_client, world, data)
    assert response.context["lines"].non_form_errors() == [
        "The monthly lines add up to 2,000.00 but the total is 3,000.00. "
        "Adjust the lines, or untick “Lines must sum to total”."
    ]
    assert "add up to 2,000.00" in response.content.decode()
    assert snapshot(world) == before


def test_lines_may_differ_from_the_total_when_the_budget_allows_it(lead_client, world):
    data = plan_post(
        world.project.budget,
        [("2026-01", "1000.00"), ("2026-02", "1000.00")],
        lines_must_sum_to_total=None,
    )
    assert post_plan(lead_client, world, data).status_code == 302
    assert world.project.budget.lines.count() == 2


def test_a_new_budget_and_its_lines_are_created_together(lead_client, world):
    project = world.other_project
    project.team = world.team
    project.save()
    data = plan_post(None, [("2026-01", "1000.00"), ("2026-02", "2000.00")])
    response = lead_client.post(reverse("budget_edit", args=[project.slug]), data)
    assert response.status_code == 302
    budget = Budget.objects.get(project=project)
    assert list(budget.lines.values_list("month", flat=True)) == [
        date(2026, 1, 1),
        date(2026, 2, 1),
    ]


def test_a_refused_new_budget_leaves_no_budget_behind(lead_client, world):
    project = world.other_project
    project.team = world.team
    project.save()
    data = plan_post(None, [("2026-01", "1000.00")])  # does not add up to 3,000
    lead_client.post(reverse("budget_edit", args=[project.slug]), data)
    assert not Budget.objects.filter(project=project).exists()
    assert not BudgetLine.objects.filter(budget__project=project).exists()


def test_two_months_can_swap_their_amounts_in_one_save(lead_client, world):
    data = plan_post(
        world.project.budget, [("2026-02", "1000.00"), ("2026-01", "2000.00")]
    )
    assert post_plan(lead_client, world, data).status_code == 302
    assert snapshot(world)[2] == [
        (date(2026, 1, 1), Decimal("2000.00")),
        (date(2026, 2, 1), Decimal("1000.00")),
    ]


def test_a_failure_while_saving_lines_keeps_the_old_plan(
    lead_client, world, monkeypatch
):
    before = snapshot(world)

    def fail(*args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(BudgetLine.objects, "bulk_create", fail)
    data = plan_post(
        world.project.budget,
        [("2026-01", "1500.00"), ("2026-02", "2000.00")],
        total="3500.00",
    )
    with pytest.raises(RuntimeError):
        post_plan(lead_client, world, data)
    assert snapshot(world) == before


@pytest.mark.parametrize(("persona", "status"), [("member", 403), ("outsider", 404)])
def test_only_leads_may_post_a_plan(client, world, persona, status):
    before = snapshot(world)
    client.force_login(getattr(world, persona))
    data = plan_post(world.project.budget, [("2026-01", "3000.00")])
    assert post_plan(client, world, data).status_code == status
    assert snapshot(world) == before
