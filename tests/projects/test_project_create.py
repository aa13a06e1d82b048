"""A project created in the portal at /projects/new/: who may, what it makes at once
(the project, its draft budget and plan, its allocation rule), what it refuses, and
the costs already imported that a worker then gives it."""

import threading
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, connection, transaction
from django.test import Client
from django.urls import reverse

from billing.models import CostRecord, DailyCost
from budgets.models import Budget
from budgets.services import Recognition, project_create
from core.models import UnsentTask
from core.tasks import unsent_tasks_send
from projects.models import AllocationRule, Project
from tests.conftest import make_cost_record, make_project, make_spend, wait_for

pytestmark = pytest.mark.django_db

NEW = reverse("project_new")


@pytest.fixture(autouse=True)
def february(time_machine):
    time_machine.move_to(datetime(2026, 2, 10, 12, tzinfo=UTC), tick=False)


def form_data(team, owner, **overrides) -> dict:
    """Two months, 1,000 and 2,000, recognised by the tag project=<its slug>."""
    data = {
        "team": team.pk,
        "name": "Mistral LoRA",
        "kind": Project.Kind.PEFT,
        "start_date": "2026-03-01",
        "end_date": "2026-04-30",
        "owner": owner.pk,
        "description": "",
        "budget-total": "3000.00",
        "budget-currency": "USD",
        "budget-cost_measure": "effective_cost",
        "budget-tolerance_percent": "10",
        "budget-lines_must_sum_to_total": "on",
        "lines-TOTAL_FORMS": "6",
        "lines-INITIAL_FORMS": "0",
        "lines-MIN_NUM_FORMS": "0",
        "lines-MAX_NUM_FORMS": "1000",
        "lines-0-month": "2026-03",
        "lines-0-amount": "1000.00",
        "lines-1-month": "2026-04",
        "lines-1-amount": "2000.00",
        "recognition-match_on": "tag",
        "recognition-tag_key": "project",
        "recognition-value": "",
    }
    return {**data, **overrides}


def errors_of(response) -> dict[str, list[str]]:
    context = response.context
    found: dict[str, list[str]] = {}
    for form in (context["form"], context["budget_form"], context["recognition"]):
        for field, messages in form.errors.items():
            found.setdefault(field, []).extend(messages)
    if context["lines"].non_form_errors():
        found["lines"] = list(context["lines"].non_form_errors())
    return found


def test_a_lead_creates_a_project_with_a_draft_budget_its_plan_and_its_rule(
    client, world
):
    client.force_login(world.lead)
    assert client.get(NEW).status_code == 200

    response = client.post(NEW, form_data(world.team, world.member))

    project = Project.objects.get(name="Mistral LoRA")
    assert response.status_code == 302
    assert response["Location"] == project.get_absolute_url()
    assert (project.slug, project.team, project.owner, project.kind) == (
        "mistral-lora",
        world.team,
        world.member,
        Project.Kind.PEFT,
    )
    budget = project.budget
    assert budget.status == Budget.Status.DRAFT  # finance approves it, as ever
    assert (budget.total, budget.currency) == (Decimal("3000.00"), "USD")
    assert (budget.start_date, budget.end_date) == (date(2026, 3, 1), date(2026, 4, 30))
    assert list(budget.lines.values_list("month", "amount")) == [
        (date(2026, 3, 1), Decimal("1000.00")),
        (date(2026, 4, 1), Decimal("2000.00")),
    ]
    rule = project.allocation_rules.get()
    assert (rule.match_on, rule.tag_key, rule.value) == ("tag", "project", project.slug)
    page = client.get(project.get_absolute_url()).content.decode()
    assert "Draft" in page


@pytest.mark.parametrize("persona", ["finance", "admin"])
def test_finance_and_admins_create_a_project_for_any_team(client, world, persona):
    client.force_login(getattr(world, persona))
    data = form_data(world.other_team, world.outsider, **{"recognition-value": "x"})

    assert client.post(NEW, data).status_code == 302

    assert Project.objects.get(name="Mistral LoRA").team == world.other_team


def test_a_member_cannot_create_a_project(client, world):
    client.force_login(world.member)

    assert client.get(NEW).status_code == 403
    assert client.get(NEW, {"team": world.team.slug}).status_code == 403
    assert client.post(NEW, form_data(world.team, world.member)).status_code == 403
    assert not Project.objects.filter(name="Mistral LoRA").exists()


def test_a_lead_of_another_team_gets_404_for_this_team_and_cannot_create_in_it(
    client, world
):
    client.force_login(world.outsider)  # leads "Other", not "Foundation"

    assert client.get(NEW, {"team": world.team.slug}).status_code == 404
    response = client.post(NEW, form_data(world.team, world.outsider))

    assert response.status_code == 200
    assert "team" in errors_of(response)
    assert not Project.objects.filter(name="Mistral LoRA").exists()


def test_the_team_page_offers_new_project_to_its_lead_only(client, world):
    link = f'{NEW}?team={world.team.slug}"'
    client.force_login(world.lead)
    assert link in client.get(world.team.get_absolute_url()).content.decode()
    assert f'href="{NEW}"' in client.get(reverse("dashboard")).content.decode()
    client.force_login(world.member)
    assert link not in client.get(world.team.get_absolute_url()).content.decode()
    assert f'href="{NEW}"' not in client.get(reverse("dashboard")).content.decode()


def test_a_name_the_team_already_has_in_any_case_is_refused_on_the_form(client, world):
    client.force_login(world.lead)

    response = client.post(NEW, form_data(world.team, world.lead, name="LLAMA sft"))

    assert response.status_code == 200
    page = response.content.decode()
    assert "This team already has a project of that name." in page
    assert Project.objects.filter(name__iexact="llama sft").count() == 1


def test_another_team_may_use_the_same_name_under_another_slug(client, world):
    client.force_login(world.outsider)
    data = form_data(world.other_team, world.outsider, name="Llama SFT")
    data["recognition-value"] = "llama-sft-other"

    assert client.post(NEW, data).status_code == 302

    assert Project.objects.get(team=world.other_team, name="Llama SFT").slug == (
        "llama-sft-2"
    )


def test_the_name_new_never_hides_the_new_project_page(client, world):
    client.force_login(world.lead)

    client.post(NEW, form_data(world.team, world.lead, name="New"))

    assert Project.objects.get(name="New").slug == "new-2"
    assert client.get(NEW).context["form"] is not None


def test_the_database_refuses_a_second_name_of_a_team_in_any_case(world):
    with pytest.raises(IntegrityError), transaction.atomic():
        make_project(world.team, world.lead, "other-slug", name="LLAMA SFT")
    make_project(world.other_team, world.outsider, "third", name="LLAMA SFT")


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"lines-1-amount": "1500.00"}, "lines", "add up to 2,500.00"),
        ({"end_date": "2026-02-01"}, "end_date", "must end after it starts"),
        ({"recognition-tag_key": ""}, "tag_key", "needs the tag key"),
        (
            {"recognition-match_on": "billing_account", "recognition-value": ""},
            "value",
            "account id",
        ),
    ],
)
def test_what_cannot_be_planned_is_said_and_nothing_is_created(
    client, world, overrides, field, message
):
    client.force_login(world.lead)

    response = client.post(NEW, form_data(world.team, world.lead, **overrides))

    assert response.status_code == 200
    assert message in " ".join(errors_of(response)[field])
    assert not Project.objects.filter(name="Mistral LoRA").exists()


def test_the_owner_must_belong_to_the_team(client, world):
    client.force_login(world.finance)

    response = client.post(NEW, form_data(world.team, world.outsider))

    assert "is not a member of Foundation" in errors_of(response)["owner"][0]


def test_a_rule_that_an_earlier_rule_would_always_beat_is_refused(client, world):
    AllocationRule.objects.create(
        project=world.project, match_on="sub_account", value="acct-7", priority=10
    )
    client.force_login(world.lead)
    data = form_data(
        world.team,
        world.lead,
        **{"recognition-match_on": "sub_account", "recognition-value": "acct-7"},
    )

    response = client.post(NEW, data)

    assert "already go to Llama Sft" in errors_of(response)["value"][0]
    assert not Project.objects.filter(name="Mistral LoRA").exists()
    assert AllocationRule.objects.count() == 1


def service_arguments(world, name: str) -> dict:
    project = Project(
        team=world.team,
        name=name,
        kind=Project.Kind.INFERENCE,
        owner=world.lead,
        start_date=date(2026, 3, 1),
        end_date=date(2026, 3, 31),
    )
    return {
        "project": project,
        "budget": Budget(total=Decimal("500.00"), currency="USD"),
        "lines": [{"month": date(2026, 3, 1), "category": "", "amount": "500.00"}],
        "recognition": Recognition(match_on="tag", tag_key="project", value=""),
    }


def test_the_service_turns_a_duplicate_name_into_an_error_on_the_name(world):
    with pytest.raises(ValidationError) as refused:
        project_create(user=world.lead, **service_arguments(world, "llama SFT"))

    assert refused.value.message_dict == {
        "name": ["This team already has a project of that name."]
    }
    assert Project.objects.count() == 2  # the world's two
    assert (AllocationRule.objects.count(), Budget.objects.count()) == (0, 1)


def test_the_service_refuses_a_team_the_user_does_not_lead(world):
    for user in (world.member, world.outsider):
        with pytest.raises(PermissionDenied):
            project_create(user=user, **service_arguments(world, "Inference"))
    assert not Project.objects.filter(name="Inference").exists()


def test_the_request_only_queues_the_allocation_of_costs_already_imported(
    client, world, django_capture_on_commit_callbacks
):
    record = make_cost_record(date(2026, 2, 3), "40", tags={"project": "mistral-lora"})
    client.force_login(world.lead)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        client.post(NEW, form_data(world.team, world.lead))

    assert len(callbacks) == 1
    record.refresh_from_db()
    assert record.project_id is None  # not in the request: a worker does it


def test_two_leads_creating_the_same_name_at_once_make_one_project(
    transactional_db, world, eager_tasks
):
    """Two requests in threads with their own PostgreSQL sessions, held at their
    INSERT of the project until both have passed the form's checks: the database's
    constraint decides, and the second hears it on the form."""
    assert connection.vendor == "postgresql"
    barrier = threading.Barrier(2)
    answers: list[tuple[int, str]] = []
    errors: list[BaseException] = []

    def hold_at_the_insert(execute, sql, params, many, context):
        if sql.startswith('INSERT INTO "projects_project"'):
            barrier.wait(timeout=30)
        return execute(sql, params, many, context)

    def create(user, name) -> None:
        try:
            client = Client()
            client.force_login(user)
            with connection.execute_wrapper(hold_at_the_insert):
                data = form_data(world.team, world.lead, name=name)
                response = client.post(NEW, data)
            answers.append((response.status_code, response.content.decode()))
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [
        threading.Thread(target=create, args=(user, name))
        for user, name in ((world.lead, "Mistral LoRA"), (world.admin, "mistral lora"))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not errors, errors
    assert sorted(status for status, _ in answers) == [200, 302]
    refused = next(page for status, page in answers if status == 200)
    assert "This team already has a project of that name." in refused
    project = Project.objects.get(name__iexact="mistral lora")
    assert Budget.objects.filter(project=project).count() == 1
    assert AllocationRule.objects.filter(project=project).count() == 1


def test_a_worker_gives_the_new_project_the_unallocated_costs_its_rule_matches(
    time_machine, worker, world
):
    time_machine.move_to(datetime(2026, 2, 10, 12, tzinfo=UTC))  # the worker waits
    ours = [
        make_cost_record(date(2026, 2, 3), "40.5", tags={"team": "x", "env": "prod"}),
        make_cost_record(date(2026, 2, 4), "9.5", tags={"env": "prod"}),
    ]
    others = [
        make_cost_record(date(2026, 2, 3), "7", tags={"env": "dev"}),
        make_cost_record(date(2026, 2, 3), "5", tags={"team": "y"}),
    ]
    # Already someone's: a new rule never takes it (that is re-allocation).
    make_spend(world.project, date(2026, 2, 3), "100", tags={"env": "prod"})
    client = Client()
    client.force_login(world.lead)
    data = form_data(
        world.team,
        world.lead,
        **{"recognition-tag_key": "env", "recognition-value": "prod"},
    )

    assert client.post(NEW, data).status_code == 302

    project = Project.objects.get(name="Mistral LoRA")
    assert wait_for(lambda: CostRecord.objects.filter(project=project).count() == 2), (
        "the worker did not allocate the costs"
    )
    assert set(CostRecord.objects.filter(project=project)) == set(ours)
    assert CostRecord.objects.filter(pk__in=[r.pk for r in others]).filter(
        project__isnull=True
    ).count() == len(others)
    assert CostRecord.objects.filter(project=world.project).count() == 1
    assert wait_for(lambda: DailyCost.objects.filter(project=project).count() == 2), (
        "the rollup was not rebuilt"
    )
    assert sum(
        DailyCost.objects.filter(project=project).values_list(
            "effective_cost", flat=True
        ),
        Decimal("0"),
    ) == Decimal("50.0")


def test_with_the_queue_down_the_project_is_created_and_its_allocation_sent_later(
    time_machine, worker, world, queue_down
):
    time_machine.move_to(datetime(2026, 2, 10, 12, tzinfo=UTC))  # the worker waits
    ours = make_cost_record(date(2026, 2, 3), "40.5", tags={"env": "prod"})
    client = Client()
    client.force_login(world.lead)
    data = form_data(
        world.team,
        world.lead,
        **{"recognition-tag_key": "env", "recognition-value": "prod"},
    )

    assert client.post(NEW, data).status_code == 302  # committed: no 500

    project = Project.objects.get(name="Mistral LoRA")
    kept = UnsentTask.objects.get()
    assert kept.task == "billing.tasks.unallocated_costs_allocate_task"
    queue_down.back()
    assert unsent_tasks_send.apply().result == 1
    assert wait_for(lambda: CostRecord.objects.filter(project=project).exists()), (
        "the allocation kept while the queue was down never ran"
    )
    assert CostRecord.objects.get(project=project) == ours
    assert not UnsentTask.objects.exists()


def test_owners_are_offered_grouped_by_their_team(client, world):
    client.force_login(world.admin)
    page = client.get(NEW).content.decode()
    select = page[
        page.index('name="owner"') : page.index("</select>", page.index('name="owner"'))
    ]
    foundation = select.index('<optgroup label="Foundation">')
    other = select.index('<optgroup label="Other">')
    assert foundation < select.index("Lena Lead") < other
    assert select.index("outsider@test.example") > other


def test_a_kept_task_no_longer_known_is_dropped_not_retried_for_ever(caplog):
    UnsentTask.objects.create(task="billing.tasks.renamed_since", args=[1])
    assert unsent_tasks_send.apply().result == 0
    assert not UnsentTask.objects.exists()
    assert "no such task" in caplog.text
