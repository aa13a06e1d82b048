"""Nobody approves their own budget; an approval approves the draft finance saw, and no
other; the admin cannot forge an approval."""

import json
import threading
from datetime import date
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.test import Client
from django.urls import reverse

from budgets.models import Budget, BudgetRevision
from budgets.services import ApprovalRefused, budget_approve, budget_save_plan

pytestmark = pytest.mark.django_db


def approve(client, world, version) -> str:
    """Finance's click on the project page: the messages of the page it lands on."""
    response = client.post(
        reverse("budget_approve", args=[world.project.slug]),
        {"version": version},
        follow=True,
    )
    return response.content.decode()


def save_plan(world, user, amount: str) -> None:
    """A draft saved through the service the plan page calls: January changes."""
    budget = Budget.objects.get(project=world.project)
    budget.total = Decimal(amount) + Decimal("2000.00")
    lines = [
        {"month": date(2026, 1, 1), "category": "", "amount": Decimal(amount)},
        {"month": date(2026, 2, 1), "category": "", "amount": Decimal("2000.00")},
    ]
    budget_save_plan(budget=budget, lines=lines, runs=[], user=user)


def budget_of(world) -> Budget:
    return Budget.objects.get(project=world.project)


def test_finance_approves_the_version_its_page_shows(client, world):
    client.force_login(world.finance)
    page = client.get(reverse("project_detail", args=[world.project.slug]))
    assert 'name="version" value="1"' in page.content.decode()
    assert "is approved" in approve(client, world, 1)
    budget = budget_of(world)
    assert (budget.status, budget.approved_by) == (
        Budget.Status.APPROVED,
        world.finance,
    )


def test_an_admin_who_created_the_draft_cannot_approve_it(client, world):
    Budget.objects.filter(project=world.project).delete()
    budget = Budget(
        project=world.project,
        currency="USD",
        total=Decimal("3000.00"),
        start_date=world.project.start_date,
        end_date=world.project.end_date,
    )
    budget_save_plan(budget=budget, lines=[], runs=[], user=world.admin)
    client.force_login(world.admin)
    project_page = client.get(reverse("project_detail", args=[world.project.slug]))
    assert "You wrote this draft" in project_page.content.decode()
    page = approve(client, world, budget_of(world).version)
    assert "You created or changed this draft" in page
    assert budget_of(world).status == Budget.Status.DRAFT
    client.force_login(world.finance)
    assert "is approved" in approve(client, world, budget_of(world).version)


def test_whoever_changed_the_draft_cannot_approve_it_even_after_another_change(
    client, world
):
    save_plan(world, world.admin, "1100.00")
    save_plan(world, world.lead, "1200.00")
    client.force_login(world.admin)
    assert "You created or changed this draft" in approve(client, world, 3)
    assert budget_of(world).status == Budget.Status.DRAFT


def test_a_draft_changed_after_finance_opened_it_is_not_approved_by_the_old_click(
    client, world
):
    client.force_login(world.finance)
    client.get(reverse("project_detail", args=[world.project.slug]))  # version 1
    save_plan(world, world.lead, "1500.00")
    page = approve(client, world, 1)
    assert "The draft changed after you opened it, so it was not approved" in page
    budget = budget_of(world)
    assert (budget.status, budget.approved_by, budget.version) == (
        Budget.Status.DRAFT,
        None,
        2,
    )
    assert "is approved" in approve(client, world, 2)
    assert budget_of(world).status == Budget.Status.APPROVED


def test_an_approval_that_names_no_version_changes_nothing(client, world):
    client.force_login(world.finance)
    response = client.post(
        reverse("budget_approve", args=[world.project.slug]), follow=True
    )
    assert "Approve from the project" in response.content.decode()
    assert budget_of(world).status == Budget.Status.DRAFT


def test_each_saved_change_of_a_draft_is_a_new_version_with_its_author(world):
    save_plan(world, world.lead, "1100.00")
    save_plan(world, world.admin, "1200.00")
    budget = budget_of(world)
    assert budget.version == 3
    assert set(budget.authors.all()) == {world.lead, world.admin}


@pytest.mark.django_db(transaction=True)
def test_a_change_saved_while_finance_approves_waits_and_becomes_a_revision(world):
    """Finance's approval holds the budget's row until it commits; the lead's save,
    started meanwhile from the draft form, then finds the budget approved and
    proposes a revision instead of undoing the approval."""
    approved, commit = threading.Event(), threading.Event()

    def approve_and_hold() -> None:
        try:
            with transaction.atomic():
                budget_approve(budget=budget_of(world), user=world.finance, version=1)
                approved.set()
                commit.wait(10)
        finally:
            connection.close()

    first = threading.Thread(target=approve_and_hold)
    first.start()
    assert approved.wait(10)
    rival = threading.Thread(
        target=_closing(save_plan), args=(world, world.lead, "1500")
    )
    rival.start()
    rival.join(1)
    assert rival.is_alive()  # waiting for the approval's row lock
    commit.set()
    first.join(10)
    rival.join(10)
    budget = budget_of(world)
    assert (budget.status, budget.approved_by, budget.version) == (
        Budget.Status.APPROVED,
        world.finance,
        1,
    )
    assert budget.lines.get(month=date(2026, 1, 1)).amount == Decimal("1000.00")
    revision = budget.revisions.get(status=BudgetRevision.Status.PENDING)
    assert revision.proposed_by == world.lead
    assert revision.proposal["lines"][0]["amount"] == "1500.00"


@pytest.mark.django_db(transaction=True)
def test_an_approval_clicked_while_a_change_is_being_saved_is_refused(world):
    """The lead's save holds the row; finance's approval of the version it saw waits,
    then finds a newer version and approves nothing."""
    saved, commit = threading.Event(), threading.Event()

    def save_and_hold() -> None:
        try:
            with transaction.atomic():
                save_plan(world, world.lead, "1500.00")
                saved.set()
                commit.wait(10)
        finally:
            connection.close()

    refusals: list[str] = []

    def approve_version_one() -> None:
        try:
            budget_approve(budget=budget_of(world), user=world.finance, version=1)
        except ApprovalRefused as refusal:
            refusals.append(str(refusal))
        finally:
            connection.close()

    first = threading.Thread(target=save_and_hold)
    first.start()
    assert saved.wait(10)
    rival = threading.Thread(target=approve_version_one)
    rival.start()
    rival.join(1)
    assert rival.is_alive()  # waiting for the save's row lock
    commit.set()
    first.join(10)
    rival.join(10)
    assert refusals and "changed after you opened it" in refusals[0]
    budget = budget_of(world)
    assert (budget.status, budget.version) == (Budget.Status.DRAFT, 2)


def _closing(function):
    def run(*args) -> None:
        try:
            function(*args)
        finally:
            connection.close()

    return run


def admin_form(client, url: str) -> dict:
    """What the admin's change form would post back unchanged."""
    response = client.get(url)
    data = {
        name: json.dumps(value) if isinstance(value, dict) else value
        for name, value in response.context["adminform"].form.initial.items()
        if value is not None
    }
    for inline in response.context["inline_admin_formsets"]:
        formset = inline.formset
        data |= {
            f"{formset.prefix}-{key}": value
            for key, value in formset.management_form.initial.items()
        }
        for form in formset.forms:
            data |= {
                form.add_prefix(name): value
                for name, value in form.initial.items()
                if value is not None
            }
            data[form.add_prefix("id")] = form.instance.pk
    return data


def test_the_admin_cannot_approve_a_budget_or_name_its_approver(client, world):
    client.force_login(world.admin)
    url = reverse("admin:budgets_budget_change", args=[budget_of(world).pk])
    data = admin_form(client, url) | {
        "status": "approved",
        "approved_by": world.finance.pk,
        "approved_at_0": "2026-01-05",
        "approved_at_1": "10:00:00",
        "version": "9",
        "authors": [],
        "total": "3000.00",
    }
    response = client.post(url, data)
    assert response.status_code == 302
    budget = budget_of(world)
    assert (budget.status, budget.approved_by, budget.approved_at) == (
        Budget.Status.DRAFT,
        None,
        None,
    )
    # A change in the admin is a new version, written by the admin.
    assert budget.version == 2
    assert list(budget.authors.all()) == [world.admin]


def test_an_approved_plan_is_read_only_in_the_admin(client, world):
    Budget.objects.filter(pk=budget_of(world).pk).update(
        status=Budget.Status.APPROVED, approved_by=world.finance
    )
    client.force_login(world.admin)
    url = reverse("admin:budgets_budget_change", args=[budget_of(world).pk])
    client.post(url, admin_form(client, url) | {"total": "9000.00"})
    assert budget_of(world).total == Decimal("3000.00")


def test_the_admin_cannot_decide_a_revision(client, world):
    client.force_login(world.admin)
    url = reverse("admin:budgets_budgetrevision_change", args=[world.revision.pk])
    forged = {
        "status": "approved",
        "decided_by": world.admin.pk,
        "proposed_by": world.admin.pk,
    }
    client.post(url, admin_form(client, url) | forged)
    world.revision.refresh_from_db()
    assert (
        world.revision.status,
        world.revision.decided_by,
        world.revision.proposed_by,
    ) == (BudgetRevision.Status.PENDING, None, world.lead)
    add = client.get(reverse("admin:budgets_budgetrevision_add"))
    assert add.status_code == 403


@pytest.mark.django_db(transaction=True)
def test_an_admin_change_saved_while_finance_approves_changes_nothing(world):
    """The admin's change form, posted while finance's approval holds the budget,
    waits for it, then finds the budget approved: its plan is read-only."""
    approved, commit = threading.Event(), threading.Event()

    def approve_and_hold() -> None:
        try:
            with transaction.atomic():
                budget_approve(budget=budget_of(world), user=world.finance, version=1)
                approved.set()
                commit.wait(10)
        finally:
            connection.close()

    admin = Client()
    admin.force_login(world.admin)
    url = reverse("admin:budgets_budget_change", args=[budget_of(world).pk])
    data = admin_form(admin, url) | {"total": "9000.00"}
    first = threading.Thread(target=approve_and_hold)
    first.start()
    assert approved.wait(10)
    rival = threading.Thread(target=_closing(admin.post), args=(url, data))
    rival.start()
    rival.join(1)
    assert rival.is_alive()  # waiting for the approval's row lock
    commit.set()
    first.join(10)
    rival.join(10)
    budget = budget_of(world)
    assert (budget.status, budget.total, budget.version) == (
        Budget.Status.APPROVED,
        Decimal("3000.00"),
        1,
    )
