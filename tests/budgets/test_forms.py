"""Bad plans are refused with a message on the field, and nothing half-saved remains."""

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
import time_machine
from django.urls import reverse

from budgets.models import Budget, BudgetLine, BudgetRevision
from tests.conftest import make_spend

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
    runs = list(budget.project.runs.all()) if budget else []
    data |= {
        "runs-TOTAL_FORMS": str(len(runs)),
        "runs-INITIAL_FORMS": str(len(runs)),
        "runs-MIN_NUM_FORMS": "0",
        "runs-MAX_NUM_FORMS": "1000",
    }
    for index, run in enumerate(runs):
        data |= run_post(index, run)
    for index, (month, amount) in enumerate(lines):
        data[f"lines-{index}-month"] = month
        data[f"lines-{index}-amount"] = amount
        data[f"lines-{index}-category"] = ""
        if index < len(existing):
            data[f"lines-{index}-id"] = str(existing[index].pk)
            data[f"lines-{index}-budget"] = str(budget.pk)
    return {k: v for k, v in data.items() if v is not None}


def run_post(index: int, run, **changes) -> dict:
    """The planned-run row of the plan form, as the browser posts it."""
    fields = {
        "id": run.pk if run else "",
        "project": run.project_id if run else "",
        "name": run.name if run else "",
        "external_id": run.external_id if run else "",
        "gpu_type": run.gpu_type if run else "",
        "gpu_count": run.gpu_count if run else "",
        "planned_gpu_hours": run.planned_gpu_hours if run else "",
        "rate_per_gpu_hour": run.rate_per_gpu_hour if run else "",
        "currency": run.currency if run else "USD",
        "start_date": run.start_date if run else "",
        "end_date": run.end_date if run else "",
        "progress_unit": run.progress_unit if run else "",
        "units_planned": run.units_planned or "" if run else "",
        **changes,
    }
    return {f"runs-{index}-{name}": str(value) for name, value in fields.items()}


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


def test_a_change_to_an_approved_budget_waits_for_finance_as_a_revision(
    lead_client, world
):
    world.revision.delete()
    Budget.objects.filter(pk=world.project.budget.pk).update(
        status=Budget.Status.APPROVED
    )
    before = snapshot(world)
    data = plan_post(
        world.project.budget,
        [("2026-01", "1000.00"), ("2026-02", "2500.00")],
        total="3500.00",
    )
    post_plan(lead_client, world, data)
    assert snapshot(world) == before
    budget = Budget.objects.get(pk=world.project.budget.pk)
    assert budget.status == Budget.Status.APPROVED
    revision = budget.revisions.get()
    assert revision.status == BudgetRevision.Status.PENDING
    assert (revision.previous["total"], revision.proposal["total"]) == (
        "3000.00",
        "3500.00",
    )
    assert revision.proposed_by == world.lead


def test_saving_an_approved_plan_unchanged_makes_no_revision(lead_client, world):
    world.revision.delete()
    Budget.objects.filter(pk=world.project.budget.pk).update(
        status=Budget.Status.APPROVED
    )
    data = plan_post(world.project.budget, [("2026-01", "1000"), ("2026-02", "2000.0")])
    assert post_plan(lead_client, world, data).status_code == 302
    assert not world.project.budget.revisions.exists()


def test_a_newer_proposal_replaces_the_pending_one(lead_client, world):
    Budget.objects.filter(pk=world.project.budget.pk).update(
        status=Budget.Status.APPROVED
    )
    data = plan_post(
        world.project.budget,
        [("2026-01", "1000.00"), ("2026-02", "2600.00")],
        total="3600.00",
    )
    post_plan(lead_client, world, data)
    statuses = dict(world.project.budget.revisions.values_list("pk", "status"))
    assert statuses[world.revision.pk] == BudgetRevision.Status.WITHDRAWN
    assert list(statuses.values()).count(BudgetRevision.Status.PENDING) == 1


def test_the_preview_shows_the_new_status_and_saves_nothing(lead_client, world):
    make_spend(world.project, date(2026, 1, 10), "900")
    before = snapshot(world)
    data = plan_post(
        world.project.budget,
        [("2026-01", "300.00"), ("2026-02", "2700.00")],
        preview="1",
    )
    with time_machine.travel(datetime(2026, 1, 20, 12, tzinfo=UTC), tick=False):
        # Logged in again on the 20th: a session begun on the real date would have
        # expired by then when that date is more than two weeks earlier.
        lead_client.force_login(world.lead)
        response = post_plan(lead_client, world, data)
    assert response.status_code == 200
    page = response.content.decode()
    assert 'data-testid="plan-preview"' in page
    # 300 planned for January, spread over 31 days: 193.55 planned by the 20th.
    assert "is 365% over plan to date: $900 spent vs $194 planned" in page
    assert snapshot(world) == before


def test_a_lead_plans_a_new_run_with_the_budget(lead_client, world):
    data = plan_post(
        world.project.budget, [("2026-01", "1000.00"), ("2026-02", "2000.00")]
    )
    data["runs-TOTAL_FORMS"] = "2"
    data |= run_post(
        1,
        None,
        name="dpo-pass",
        external_id="dpo-1",
        gpu_type="H100",
        gpu_count="16",
        planned_gpu_hours="800",
        rate_per_gpu_hour="2.49",
        start_date="2026-02-01",
        end_date="2026-02-10",
        progress_unit="steps",
        units_planned="10000",
    )
    assert post_plan(lead_client, world, data).status_code == 302
    run = world.project.runs.get(external_id="dpo-1")
    assert (run.planned_cost, run.progress_unit) == (Decimal("1992.0000"), "steps")


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


def test_the_lead_gives_finance_a_reason_for_a_revision(lead_client, client, world):
    world.revision.delete()
    Budget.objects.filter(pk=world.project.budget.pk).update(
        status=Budget.Status.APPROVED
    )
    form_page = lead_client.get(reverse("budget_edit", args=[world.project.slug]))
    assert 'name="reason"' in form_page.content.decode()  # an approved plan only
    data = plan_post(
        world.project.budget,
        [("2026-01", "1000.00"), ("2026-02", "2500.00")],
        total="3500.00",
        reason="  The 70B ablation needs a second week of H100s.  ",
    )
    post_plan(lead_client, world, data)

    revision = BudgetRevision.objects.get()
    assert revision.reason == "The 70B ablation needs a second week of H100s."
    client.force_login(world.finance)
    page = client.get(
        reverse("revision_detail", args=[world.project.slug, revision.pk])
    )
    assert "Why, says Lena Lead:</strong> The 70B ablation" in page.content.decode()


def test_editing_while_a_revision_waits_starts_from_the_proposal(lead_client, world):
    Budget.objects.filter(pk=world.project.budget.pk).update(
        status=Budget.Status.APPROVED
    )
    assert world.revision.proposal["total"] == "3500.00"  # approved: 3,000

    page = lead_client.get(reverse("budget_edit", args=[world.project.slug]))

    form = page.context["form"]
    assert form["total"].value() == "3500.00"
    assert "the form starts from that proposal" in page.content.decode()
    assert page.context["lines"].total_form_count() == len(
        world.revision.proposal["lines"]
    )
