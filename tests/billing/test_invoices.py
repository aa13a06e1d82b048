"""Approved compute invoices become cost through the loader: exactly their lines, on
their project, replaced when they change and gone when they are no longer approved."""

import threading
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
import time_machine
from django.db import connection, transaction
from django.urls import reverse

from billing.invoices import (
    SOURCE_NAME,
    compute_invoices_decide,
    compute_invoices_load,
)
from billing.models import (
    BillingSource,
    ComputeInvoice,
    ComputeInvoiceLine,
    CostRecord,
    DailyCost,
    ImportRun,
)
from billing.services import cost_records_reallocate
from core.models import UnsentTask
from core.tasks import unsent_tasks_send
from projects.models import AllocationRule
from tests.billing.importing import total
from tests.conftest import make_cost_record, make_run, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

Status = ComputeInvoice.Status


@pytest.fixture(autouse=True)
def february():
    """January's invoices arrive in February, once January is closed."""
    with time_machine.travel(datetime(2026, 2, 10, 9, tzinfo=UTC), tick=False):
        yield


def set_status(invoice: ComputeInvoice, status: str) -> ComputeInvoice:
    invoice.status = status
    invoice.save(update_fields=["status"])
    return invoice


def invoice_in(world, number: str, start: date, end: date, amount: str):
    invoice = ComputeInvoice.objects.create(
        vendor="CoreWeave",
        invoice_number=number,
        issued_on=end,
        period_start=start,
        period_end=end,
        currency="USD",
        project=world.project,
        status=Status.APPROVED,
    )
    ComputeInvoiceLine.objects.create(
        invoice=invoice, description="HGX H100 node-hours", amount=Decimal(amount)
    )
    return invoice


def test_an_approved_invoice_puts_its_exact_total_into_cost_and_daily_cost(world):
    ComputeInvoiceLine.objects.create(
        invoice=world.invoice,
        description="On-demand 8x H100 SXM",
        gpu_type="H100 80GB SXM",
        gpu_hours=Decimal("512.5000"),
        rate=Decimal("2.99"),
        amount=Decimal("1532.3750"),
    )
    set_status(world.invoice, Status.APPROVED)
    run = compute_invoices_load()
    assert run.status == ImportRun.Status.IMPORTED, run.error
    assert world.invoice.total == Decimal("2766.8750")
    assert total(CostRecord.objects.filter(project=world.project)) == Decimal(
        "2766.8750"
    )
    daily = DailyCost.objects.filter(project=world.project)
    assert total(daily, "effective_cost") == Decimal("2766.8750")
    assert total(daily, "gpu_hours") == Decimal("512.5")
    assert not daily.filter(is_provisional=True).exists()
    assert (run.rows_loaded, run.billing_periods) == (2, ["2026-01"])
    assert run.totals["billed"] == {"USD": "2766.8750"}
    assert run.totals["unallocated"] == {"USD": "0"}


def test_invoice_rows_name_vendor_invoice_and_the_tags_tag_rules_match(world):
    run = make_run(world.project, external_id="sft-run-3")
    world.invoice.training_run = run
    world.invoice.save()
    set_status(world.invoice, Status.APPROVED)
    compute_invoices_load()
    record = CostRecord.objects.get()
    assert (record.provider_name, record.invoice_id) == ("Lambda", "INV-1")
    assert record.tags == {"project": "llama-sft", "training_run": "sft-run-3"}
    assert (record.project, record.training_run) == (world.project, run)
    assert (record.charge_period_start, record.charge_period_end) == (
        datetime(2026, 1, 1, tzinfo=UTC),
        datetime(2026, 2, 1, tzinfo=UTC),
    )
    assert record.source.kind == BillingSource.Kind.COMPUTE_INVOICE


@pytest.mark.parametrize("status", [Status.DRAFT, Status.REJECTED])
def test_a_draft_or_rejected_invoice_adds_no_cost(world, status):
    set_status(world.invoice, status)
    run = compute_invoices_load()
    assert run.status == ImportRun.Status.IMPORTED, run.error
    assert not CostRecord.objects.exists()
    assert not DailyCost.objects.exists()


def test_loading_twice_with_nothing_changed_reports_unchanged(world):
    set_status(world.invoice, Status.APPROVED)
    compute_invoices_load()
    records = set(CostRecord.objects.values_list("pk", flat=True))
    run = compute_invoices_load()
    assert run.status == ImportRun.Status.UNCHANGED
    assert run.totals["billed"] == {"USD": "1234.5000"}
    assert set(CostRecord.objects.values_list("pk", flat=True)) == records


def test_an_edited_approved_invoice_replaces_its_cost_when_loaded_again(world):
    set_status(world.invoice, Status.APPROVED)
    compute_invoices_load()
    world.invoice.lines.update(amount=Decimal("1000.0100"))
    run = compute_invoices_load()
    assert run.status == ImportRun.Status.IMPORTED
    assert total(CostRecord.objects) == Decimal("1000.0100")
    assert total(DailyCost.objects.filter(project=world.project)) == Decimal(
        "1000.0100"
    )


def test_setting_an_invoice_back_to_draft_and_loading_removes_its_cost(world):
    set_status(world.invoice, Status.APPROVED)
    compute_invoices_load()
    set_status(world.invoice, Status.DRAFT)
    run = compute_invoices_load()
    assert run.status == ImportRun.Status.IMPORTED, run.error
    assert run.billing_periods == ["2026-01"]
    assert not CostRecord.objects.exists()
    assert not DailyCost.objects.exists()


def test_un_approving_one_month_s_invoice_keeps_the_other_months(world):
    december = invoice_in(
        world, "CW-12", date(2025, 12, 1), date(2025, 12, 31), "500.00"
    )
    set_status(world.invoice, Status.APPROVED)
    compute_invoices_load()
    set_status(world.invoice, Status.REJECTED)
    run = compute_invoices_load()
    assert run.billing_periods == ["2025-12", "2026-01"]
    assert set(CostRecord.objects.values_list("invoice_id", flat=True)) == {"CW-12"}
    assert total(DailyCost.objects) == december.total == Decimal("500.0000")


def test_approving_again_after_removal_loads_the_invoice_again(world):
    set_status(world.invoice, Status.APPROVED)
    compute_invoices_load()
    set_status(world.invoice, Status.DRAFT)
    compute_invoices_load()
    set_status(world.invoice, Status.APPROVED)
    run = compute_invoices_load()
    assert run.status == ImportRun.Status.IMPORTED
    assert total(DailyCost.objects) == Decimal("1234.5000")


def test_loading_one_invoice_keeps_the_other_approved_invoices_of_its_month(world):
    other = invoice_in(world, "CW-1", date(2026, 1, 1), date(2026, 1, 31), "700.00")
    set_status(world.invoice, Status.APPROVED)
    compute_invoices_load()
    world.invoice.lines.update(amount=Decimal("34.5000"))
    run = compute_invoices_load(invoice_ids=[world.invoice.pk])
    assert run.status == ImportRun.Status.IMPORTED, run.error
    assert set(CostRecord.objects.values_list("invoice_id", flat=True)) == {
        "INV-1",
        other.invoice_number,
    }
    assert total(DailyCost.objects) == Decimal("734.5000")


def test_moving_an_invoice_to_another_month_moves_its_cost(world):
    set_status(world.invoice, Status.APPROVED)
    compute_invoices_load()
    world.invoice.period_start, world.invoice.period_end = (
        date(2025, 12, 1),
        date(2025, 12, 31),
    )
    world.invoice.save()
    run = compute_invoices_load(invoice_ids=[world.invoice.pk])
    assert run.billing_periods == ["2025-12", "2026-01"]
    # The invoice covers December: its cost is spread over December's days.
    december = {date(2025, 12, day) for day in range(1, 32)}
    assert set(DailyCost.objects.values_list("date", flat=True)) == december
    assert total(DailyCost.objects.filter(project=world.project)) == Decimal(
        "1234.5000"
    )


def test_invoice_costs_stay_on_their_project_when_history_is_reallocated(world):
    set_status(world.invoice, Status.APPROVED)
    compute_invoices_load()
    assert cost_records_reallocate() is None
    assert CostRecord.objects.get().project == world.project


def test_a_rule_that_matches_invoice_costs_still_comes_first(world):
    set_status(world.invoice, Status.APPROVED)
    AllocationRule.objects.create(
        project=world.other_project, match_on="service", value="GPU compute"
    )
    compute_invoices_load()
    assert CostRecord.objects.get().project == world.other_project


def test_a_source_of_the_same_name_but_another_kind_is_left_alone(world):
    make_cost_record(
        date(2026, 1, 5),
        "42.00",
        source=BillingSource.objects.create(
            name=SOURCE_NAME, kind=BillingSource.Kind.FOCUS
        ),
    )
    set_status(world.invoice, Status.APPROVED)
    run = compute_invoices_load()
    assert run.status == ImportRun.Status.FAILED
    assert "rename it" in run.error
    assert total(CostRecord.objects) == Decimal("42.00")


def test_approving_in_the_admin_puts_the_invoice_into_cost(
    client, world, django_capture_on_commit_callbacks, eager_tasks
):
    client.force_login(world.admin)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(
            reverse("admin:billing_computeinvoice_changelist"),
            {"action": "approve", "_selected_action": [world.invoice.pk]},
        )
    assert CostRecord.objects.get().billed_cost == Decimal("1234.50000000000")
    assert CostRecord.objects.get().project == world.project


def decide(client, user, invoice, status):
    client.force_login(user)
    return client.post(
        reverse("invoice_decide", args=[invoice.pk]), {"status": status}, follow=True
    )


def test_finance_approves_in_the_portal_and_the_invoice_becomes_cost(
    client, world, django_capture_on_commit_callbacks, eager_tasks
):
    with django_capture_on_commit_callbacks(execute=True):
        page = decide(client, world.finance, world.invoice, Status.APPROVED)
    world.invoice.refresh_from_db()
    assert (world.invoice.status, world.invoice.decided_by) == (
        Status.APPROVED,
        world.finance,
    )
    assert world.invoice.decided_at == datetime(2026, 2, 10, 9, tzinfo=UTC)
    assert CostRecord.objects.get().billed_cost == Decimal("1234.50000000000")
    text = page.content.decode()
    assert "Lambda INV-1 is approved: it counts as cost." in text
    assert "Approved by finance@test.example on 10 Feb 2026, 09:00." in text
    assert "Set back to draft" in text


def test_finance_rejects_then_sets_back_to_draft_and_no_cost_is_added(
    client, world, django_capture_on_commit_callbacks, eager_tasks
):
    with django_capture_on_commit_callbacks(execute=True):
        decide(client, world.finance, world.invoice, Status.APPROVED)
        decide(client, world.finance, world.invoice, Status.DRAFT)
        page = decide(client, world.admin, world.invoice, Status.REJECTED)
    world.invoice.refresh_from_db()
    assert (world.invoice.status, world.invoice.decided_by) == (
        Status.REJECTED,
        world.admin,
    )
    assert not CostRecord.objects.exists()
    assert "It adds no cost." in page.content.decode()


@pytest.mark.parametrize(
    ("persona", "code"), [("lead", 403), ("member", 403), ("outsider", 404)]
)
def test_only_finance_and_admins_decide_on_an_invoice(client, world, persona, code):
    client.force_login(getattr(world, persona))
    answer = client.post(
        reverse("invoice_decide", args=[world.invoice.pk]), {"status": "approved"}
    )
    assert answer.status_code == code
    world.invoice.refresh_from_db()
    assert (world.invoice.status, world.invoice.decided_by) == (Status.DRAFT, None)


def test_the_lead_sees_the_status_but_no_decision_buttons(client, world):
    client.force_login(world.lead)
    page = client.get(world.invoice.get_absolute_url()).content.decode()
    assert "A draft adds no cost until finance approves it." in page
    assert "invoice_decide" not in page and 'value="approved"' not in page


def test_a_decision_from_an_out_of_date_page_changes_nothing(client, world):
    set_status(world.invoice, Status.APPROVED)
    page = decide(client, world.finance, world.invoice, Status.REJECTED)
    world.invoice.refresh_from_db()
    assert world.invoice.status == Status.APPROVED
    assert "INV-1 is approved: it cannot go from there" in page.content.decode()


def test_two_people_deciding_at_once_are_taken_in_turn(world):
    """Finance approves while an admin, from the same draft page, rejects: the first
    holds the invoice until it commits, and the second then finds it decided."""
    decided, commit = threading.Event(), threading.Event()

    def approve_and_hold():
        try:
            with transaction.atomic():
                compute_invoices_decide(
                    invoice_ids=[world.invoice.pk],
                    status=Status.APPROVED,
                    by=world.finance,
                )
                decided.set()
                commit.wait(10)
        finally:
            connection.close()

    first = threading.Thread(target=approve_and_hold)
    first.start()
    assert decided.wait(10)
    second: list[int] = []

    def reject_the_draft():
        try:
            second.append(
                compute_invoices_decide(
                    invoice_ids=[world.invoice.pk],
                    status=Status.REJECTED,
                    by=world.admin,
                    from_status=Status.DRAFT,
                )
            )
        finally:
            connection.close()

    rival = threading.Thread(target=reject_the_draft)
    rival.start()
    rival.join(1)
    assert rival.is_alive()  # waiting for the first decision
    commit.set()
    first.join(10)
    rival.join(10)
    assert second == [0]
    world.invoice.refresh_from_db()
    assert (world.invoice.status, world.invoice.decided_by) == (
        Status.APPROVED,
        world.finance,
    )


def test_with_the_queue_down_a_decision_stands_and_its_load_is_sent_later(
    client, worker, world, queue_down
):
    page = decide(client, world.finance, world.invoice, Status.APPROVED)

    assert page.status_code == 200  # committed, never a 500
    world.invoice.refresh_from_db()
    assert world.invoice.status == Status.APPROVED
    kept = UnsentTask.objects.get()
    assert (kept.task, kept.args) == (
        "billing.tasks.compute_invoices_load_task",
        [[world.invoice.pk]],
    )
    assert not CostRecord.objects.exists()
    queue_down.back()
    assert unsent_tasks_send.apply().result == 1
    assert not UnsentTask.objects.exists()
    assert wait_for(CostRecord.objects.exists), "the kept load never ran"
