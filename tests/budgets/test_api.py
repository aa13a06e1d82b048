"""The plan and alerts through the API: the plan page's checks and service (a change
to an approved budget waits for finance as a revision), the field named in each
refusal, and an alert acknowledged through the portal's own service."""

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.urls import reverse

from billing.models import CostRecord
from budgets.models import Alert, Budget, BudgetRevision
from projects.models import AllocationRule, TrainingRun
from tests.conftest import make_budget, make_cost_record, make_run

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def february(time_machine):
    time_machine.move_to(datetime(2026, 2, 10, 12, tzinfo=UTC), tick=False)


def plan_put(client, world, change: dict):
    url = reverse("api_project_plan", args=[world.project.slug])
    return client.put(url, change, content_type="application/json")


def lines_of(budget: Budget) -> list[tuple[date, Decimal]]:
    return [(line.month, line.amount) for line in budget.lines.order_by("month")]


NEW_RUN = {
    "name": "DPO run",
    "external_id": "dpo",
    "gpu_type": "H100",
    "gpu_count": 16,
    "planned_gpu_hours": "200",
    "rate_per_gpu_hour": "2.50",
    "currency": "USD",
    "start_date": "2026-03-01",
    "end_date": "2026-03-31",
}


def test_a_lead_replaces_the_lines_of_a_draft_plan(client, world):
    client.force_login(world.lead)
    response = plan_put(
        client,
        world,
        {
            "total": "3500.00",
            "lines": [
                {"month": "2026-02-01", "amount": "2500.00"},
                {"month": "2026-03-01", "amount": "1000.00"},
            ],
        },
    )
    assert response.status_code == 200, response.json()
    budget = Budget.objects.get(project=world.project)
    assert budget.total == Decimal("3500.00")
    assert lines_of(budget) == [
        (date(2026, 2, 1), Decimal("2500.00")),
        (date(2026, 3, 1), Decimal("1000.00")),
    ]
    assert [line["month"] for line in response.json()["lines"]] == [
        "2026-02-01",
        "2026-03-01",
    ]


def test_a_change_to_an_approved_plan_becomes_a_revision_and_the_plan_stays(
    client, world
):
    Budget.objects.filter(project=world.project).update(status=Budget.Status.APPROVED)
    client.force_login(world.lead)
    response = plan_put(
        client,
        world,
        {"total": "3500.00", "lines": [{"month": "2026-01-01", "amount": "3500.00"}]},
    )
    assert response.status_code == 200, response.json()
    pending = BudgetRevision.objects.get(status=BudgetRevision.Status.PENDING)
    assert response.json()["pending_revision"] == pending.pk
    assert pending.proposal["total"] == "3500.00"
    assert response.json()["total"] == "3000.00"
    budget = Budget.objects.get(project=world.project)
    assert lines_of(budget) == [
        (date(2026, 1, 1), Decimal("1000.00")),
        (date(2026, 2, 1), Decimal("2000.00")),
    ]


def test_a_run_is_added_and_another_changed_through_the_plan(client, world):
    client.force_login(world.lead)
    changed = {"id": world.run.pk, "gpu_count": 4}
    response = plan_put(client, world, {"runs": [changed, NEW_RUN]})
    assert response.status_code == 200, response.json()
    world.run.refresh_from_db()
    assert world.run.gpu_count == 4
    added = TrainingRun.objects.get(project=world.project, external_id="dpo")
    assert (added.gpu_count, added.planned_cost) == (16, Decimal("500.0000"))
    assert world.project.budget.lines.count() == 2  # lines not given stay


def test_a_run_given_twice_is_refused(client, world):
    client.force_login(world.lead)
    twice = [{"id": world.run.pk, "gpu_count": 4}, {"id": world.run.pk, "gpu_count": 2}]
    response = plan_put(client, world, {"runs": twice})
    assert response.status_code == 400
    assert response.json() == {"runs[1].id": ["This run is given twice."]}
    world.run.refresh_from_db()
    assert world.run.gpu_count == 8


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        (
            {"lines": [{"month": "2026-01-01", "amount": "-5"}]},
            "lines[0].amount",
            "A planned amount cannot be negative.",
        ),
        (
            {"lines": [{"month": "2026-01-01", "amount": "5"}]},
            "lines",
            "The monthly lines add up to 5.00 but the total is 3,000.00.",
        ),
        (
            {
                "lines": [
                    {"month": "2026-01-01", "amount": "1000.00"},
                    {"month": "2026-01-01", "amount": "2000.00"},
                ]
            },
            "lines",
            "duplicate data for month and category",
        ),
        ({"total": "-1"}, "total", "A budget cannot be negative."),
        ({"currency": "XYZ"}, "currency", "not an ISO 4217"),
        (
            {"runs": [NEW_RUN | {"external_id": "sft-run"}]},
            "runs[0]",
            "duplicate values",
        ),
        (
            {"runs": [NEW_RUN | {"end_date": "2026-02-01"}]},
            "runs[0].end_date",
            "The run must end after it starts.",
        ),
        ({"runs": [{"id": 999999, "gpu_count": 1}]}, "runs[0].id", "No such run"),
        (
            {"runs": [{"id": 0, "gpu_count": 1}] * 2},
            "runs[0].id",
            "No such run",
        ),
        ({"runs": [{"name": "half a run"}]}, "runs[0].gpu_type", "required"),
        (
            {"lines": [{"month": "not a month", "amount": "1"}]},
            "lines[0].month",
            "wrong format",
        ),
    ],
)
def test_a_bad_plan_is_a_400_naming_the_field_and_changes_nothing(
    client, world, change, field, message
):
    client.force_login(world.lead)
    before = (lines_of(world.project.budget), TrainingRun.objects.count())
    response = plan_put(client, world, change)
    assert response.status_code == 400
    errors = response.json()
    assert field in errors, errors
    assert message in str(errors[field]), errors
    budget = Budget.objects.get(project=world.project)
    assert (lines_of(budget), TrainingRun.objects.count()) == before
    assert budget.total == Decimal("3000.00")


def test_a_project_without_a_budget_gets_its_first_plan(client, world):
    world.project.budget.delete()
    client.force_login(world.lead)
    url = reverse("api_project_plan", args=[world.project.slug])
    assert client.get(url).status_code == 404
    response = plan_put(
        client,
        world,
        {"total": "100.00", "lines": [{"month": "2026-03-01", "amount": "100.00"}]},
    )
    assert response.status_code == 200, response.json()
    assert response.json()["status"] == Budget.Status.DRAFT
    assert response.json()["start_date"] == str(world.project.start_date)


def test_a_member_acknowledges_an_alert_with_a_note(client, world):
    client.force_login(world.member)
    url = reverse("api_alert_acknowledge", args=[world.alert.pk])
    response = client.post(
        url, {"note": "Cutting the batch size"}, content_type="application/json"
    )
    assert response.status_code == 200
    assert response.json()["status"] == Alert.Status.ACKNOWLEDGED
    world.alert.refresh_from_db()
    assert world.alert.status == Alert.Status.ACKNOWLEDGED


def test_acknowledging_needs_a_note_and_a_resolved_alert_is_a_conflict(client, world):
    client.force_login(world.lead)
    url = reverse("api_alert_acknowledge", args=[world.alert.pk])
    empty = client.post(url, {"note": ""}, content_type="application/json")
    assert empty.status_code == 400
    assert list(empty.json()) == ["note"]
    Alert.objects.filter(pk=world.alert.pk).update(status=Alert.Status.RESOLVED)
    late = client.post(url, {"note": "On it"}, content_type="application/json")
    assert late.status_code == 409
    assert late.json() == {"detail": "This alert was already resolved."}
    world.alert.refresh_from_db()
    assert world.alert.status == Alert.Status.RESOLVED


def rule_post(client, rule: dict):
    url = reverse("api_allocation_rule_list")
    return client.post(url, rule, content_type="application/json")


TAG_RULE = {"match_on": "tag", "tag_key": "project", "value": "llama"}


def test_an_admins_new_rule_is_given_the_unallocated_costs_it_matches(
    client, world, eager_tasks, django_capture_on_commit_callbacks
):
    matching = make_cost_record(date(2026, 1, 5), "12", tags={"project": "llama"})
    other = make_cost_record(date(2026, 1, 5), "7", tags={"project": "other"})
    client.force_login(world.admin)
    with django_capture_on_commit_callbacks(execute=True):
        response = rule_post(client, TAG_RULE | {"project": world.project.slug})
    assert response.status_code == 201, response.json()
    rule = AllocationRule.objects.get(pk=response.json()["id"])
    assert (rule.project, rule.describe()) == (world.project, "tag project = llama")
    assert CostRecord.objects.get(pk=matching.pk).project == world.project
    assert CostRecord.objects.get(pk=other.pk).project is None


def test_only_admins_add_rules(client, world):
    for persona in ("lead", "finance"):
        client.force_login(getattr(world, persona))
        response = rule_post(client, TAG_RULE | {"project": world.project.slug})
        assert response.status_code == 403
    assert not AllocationRule.objects.exists()


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"tag_key": ""}, "tag_key", "A tag rule needs the tag key."),
        ({"match_on": "colour"}, "match_on", "not a valid choice"),
        ({"project": "no-such-project"}, "project", "does not exist"),
        ({"training_run": "other"}, "training_run", "must belong to the rule's"),
        ({"value": "taken"}, "value", "These costs already go to"),
    ],
)
def test_a_bad_rule_is_a_400_naming_the_field_and_adds_nothing(
    client, world, change, field, message
):
    AllocationRule.objects.create(
        project=world.other_project, match_on="tag", tag_key="project", value="taken"
    )
    if change.get("training_run") == "other":
        change = {"training_run": make_run(world.other_project).pk}
    client.force_login(world.admin)
    response = rule_post(client, TAG_RULE | {"project": world.project.slug} | change)
    assert response.status_code == 400
    assert message in str(response.json()[field]), response.json()
    assert AllocationRule.objects.count() == 1


def test_the_budgets_of_the_callers_projects_come_with_their_lines(client, world):
    make_budget(world.other_project, {date(2026, 1, 1): "50.00"})
    client.force_login(world.member)
    budgets = client.get(reverse("api_budget_list")).json()["results"]
    assert [(b["project"], b["total"], b["status"]) for b in budgets] == [
        (world.project.slug, "3000.00", Budget.Status.DRAFT)
    ]
    assert budgets[0]["lines"] == [
        {"month": "2026-01-01", "category": "", "amount": "1000.00"},
        {"month": "2026-02-01", "category": "", "amount": "2000.00"},
    ]
    client.force_login(world.finance)
    url = reverse("api_budget_list")
    everything = client.get(url).json()["results"]
    assert len(everything) == 2
    one = client.get(url, {"project": world.other_project.slug}).json()["results"]
    assert [b["total"] for b in one] == ["50.00"]
