from datetime import UTC, date, datetime

import pytest
import time_machine
from django.apps import apps
from django.core.management import call_command
from django.core.management.base import CommandError

from billing.invoices import SOURCE_NAME as INVOICES
from billing.models import ComputeInvoice, CostRecord, DailyCost
from billing.services import daily_costs_rebuild
from budgets.services import Status, project_variance
from projects.models import Project
from spendtracker.demo import demo_seed


def row_counts() -> dict[str, int]:
    return {
        model._meta.label: model.objects.count()
        for model in apps.get_models()
        if model._meta.app_label in {"accounts", "projects", "budgets", "billing"}
    }


# seed_demo seeds around the real date: a day, or a month, turning between two seeds
# would change what they write.
SEEDED_ON = datetime(2026, 12, 15, 12, tzinfo=UTC)


@time_machine.travel(SEEDED_ON, tick=False)
def test_seed_demo_twice_duplicates_nothing(db):
    call_command("seed_demo", "--force")
    first = row_counts()
    call_command("seed_demo", "--force")
    second = row_counts()
    # The approved invoice loads as it would in use, a run each time; the second
    # replaces the first's rows (its lines were written again), adding none.
    assert second.pop("billing.ImportRun") == first.pop("billing.ImportRun") + 1
    assert second == first
    assert first["projects.Project"] == 8
    assert first["accounts.Team"] == 3


@time_machine.travel(SEEDED_ON, tick=False)
def test_the_demo_tells_its_story(db):
    call_command("seed_demo", "--force")
    today = DailyCost.objects.latest("date").date
    statuses = {
        p.slug: project_variance(project=p, as_of=today).status
        for p in Project.objects.all()
    }
    assert statuses["atlas-13b-pretraining"] == Status.OVER
    assert statuses["support-bot-lora"] == Status.ON_TRACK
    assert statuses["chat-inference"] == Status.ON_TRACK
    assert statuses["model-evals"] == Status.AT_RISK
    assert DailyCost.objects.filter(project__isnull=True).exists()  # unallocated


@time_machine.travel(SEEDED_ON, tick=False)
def test_the_demos_approved_invoice_counts_as_cost_and_the_draft_does_not(db):
    call_command("seed_demo", "--force")
    approved = ComputeInvoice.objects.get(status=ComputeInvoice.Status.APPROVED)
    billed = CostRecord.objects.filter(source__name=INVOICES)
    assert sum(r.billed_cost for r in billed) == approved.total
    assert {r.project.slug for r in billed} == {"support-bot-lora"}


def test_seed_demo_refuses_to_create_known_logins_in_production(db, settings):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="DJANGO_DEBUG off"):
        call_command("seed_demo")


def test_seeding_again_a_month_later_leaves_no_stale_rollup(db):
    demo_seed(today=date(2026, 11, 26))
    demo_seed(today=date(2026, 12, 30))
    rolled_up = list(DailyCost.objects.order_by("pk").values_list(*ROLLUP_FIELDS))
    daily_costs_rebuild(start=date(2000, 1, 1), end=date(2100, 1, 1))
    rebuilt = list(DailyCost.objects.order_by("pk").values_list(*ROLLUP_FIELDS))
    assert sorted(rolled_up, key=str) == sorted(rebuilt, key=str)
    oldest_cost = CostRecord.objects.earliest("charge_period_start").charge_period_start
    assert not DailyCost.objects.filter(date__lt=oldest_cost.date()).exists()


ROLLUP_FIELDS = ("date", "project_id", "training_run_id", "effective_cost")
