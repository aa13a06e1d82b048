"""Run telemetry (POST /api/v1/runs/{id}/events/): what a run reports of itself, the
cost estimated from it, and billing data replacing the estimate day by day."""

import json
import threading
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.urls import reverse
from rest_framework.test import APIClient

from billing.models import BillingSource, CostRecord, DailyCost, ImportRun
from billing.runs import import_finished_announce
from budgets.models import GpuRate, RunEvent
from budgets.telemetry import (
    estimated_by_day,
    run_estimate_accuracy,
    run_estimates_restate,
    runs_reached_by_import,
)
from projects.models import TrainingRun
from tests.conftest import make_cost_record, make_run, wait_for

pytestmark = pytest.mark.django_db

# 22:00 on 14 January: the run's start, two hours before midnight.
STARTED = datetime(2026, 1, 14, 22, 0, tzinfo=UTC)
NOW = datetime(2026, 1, 15, 6, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def frozen(time_machine):
    time_machine.move_to(NOW, tick=False)


@pytest.fixture
def run(world):
    return make_run(
        world.project,
        name="Night run",
        external_id="night-run",
        progress_unit=TrainingRun.ProgressUnit.STEPS,
        units_planned=Decimal("1000"),
    )


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def post(client, run, **event):
    return client.post(reverse("api_run_events", args=[run.pk]), event, format="json")


def report_a_night(client, run) -> None:
    """8 GPUs at 2.50 from 22:00, 16 GPUs from 02:00, stopped at 04:00."""
    answers = [
        post(
            client,
            run,
            kind="start",
            idempotency_key="a",
            at=STARTED.isoformat(),
            gpu_count=8,
            price_per_gpu_hour="2.50",
        ),
        post(
            client,
            run,
            kind="heartbeat",
            idempotency_key="b",
            at=(STARTED + timedelta(hours=4)).isoformat(),
            gpu_count=16,
            units_done="120",
            unit="steps",
        ),
        post(
            client,
            run,
            kind="stop",
            idempotency_key="c",
            at=(STARTED + timedelta(hours=6)).isoformat(),
        ),
    ]
    assert [answer.status_code for answer in answers] == [201, 201, 201], [
        answer.content for answer in answers
    ]


def test_gpu_hours_and_cost_are_split_at_midnight_from_each_event_to_the_next(
    world, run
):
    report_a_night(client_for(world.lead), run)

    days = estimated_by_day(list(run.events.all()))

    # 14th: 2 h x 8 GPUs. 15th: 2 h x 8 GPUs, then 2 h x 16, all at 2.50.
    assert {day: (e.gpu_hours, e.cost) for day, e in days.items()} == {
        date(2026, 1, 14): (Decimal("16"), Decimal("40")),
        date(2026, 1, 15): (Decimal("48"), Decimal("120")),
    }


def test_the_events_move_the_run_and_its_progress(world, run):
    report_a_night(client_for(world.lead), run)
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.COMPLETED
    assert run.units_done == Decimal("120")  # earned value reads it
    heartbeat = run.events.get(kind="heartbeat")
    # What the heartbeat left out is what the run last said.
    assert heartbeat.price_per_gpu_hour == Decimal("2.50")
    assert heartbeat.gpu_type == "H100"


def test_estimates_become_provisional_cost_of_the_run_within_its_project(
    world, run, eager_tasks, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        report_a_night(client_for(world.lead), run)

    lines = CostRecord.objects.filter(source__kind=BillingSource.Kind.TELEMETRY)
    assert sorted(
        (line.charge_period_start.date(), line.effective_cost) for line in lines
    ) == [(date(2026, 1, 14), Decimal("40")), (date(2026, 1, 15), Decimal("120"))]
    assert all(line.is_provisional for line in lines)
    assert {(line.project, line.training_run) for line in lines} == {
        (world.project, run)
    }
    rolled_up = DailyCost.objects.filter(training_run=run)
    assert sum(row.effective_cost for row in rolled_up) == Decimal("160")
    assert sum(row.gpu_hours for row in rolled_up) == Decimal("64")


def test_billing_data_for_a_day_replaces_its_estimate_and_is_never_added_to_it(
    world, run, eager_tasks, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        report_a_night(client_for(world.lead), run)
    billed = make_cost_record(
        date(2026, 1, 14), "44", project=world.project, training_run=run
    )

    run_estimates_restate(run_id=run.pk)

    counted = CostRecord.objects.filter(training_run=run)
    by_day = {}
    for line in counted:
        day = line.charge_period_start.date()
        by_day.setdefault(day, []).append((line.source.kind, line.effective_cost))
    assert by_day == {
        date(2026, 1, 14): [("focus", Decimal("44"))],  # billed, not 44 + 40
        date(2026, 1, 15): [("telemetry", Decimal("120"))],  # still estimated
    }
    assert sum(
        DailyCost.objects.filter(training_run=run).values_list(
            "effective_cost", flat=True
        ),
        Decimal("0"),
    ) == Decimal("164")
    # The 14th was reported from 22:00 only: two hours are no match for a day's bill.
    assert billed.effective_cost == Decimal("44")
    assert run_estimate_accuracy(run) == []


def report_a_whole_day(client, run) -> None:
    """8 GPUs at 2.50 from midnight on the 13th, stopped at 06:00 on the 14th."""
    for key, kind, at in [
        ("a", "start", datetime(2026, 1, 13, tzinfo=UTC)),
        ("b", "heartbeat", datetime(2026, 1, 14, tzinfo=UTC)),
        ("c", "stop", datetime(2026, 1, 14, 6, tzinfo=UTC)),
    ]:
        answer = post(
            client,
            run,
            kind=kind,
            idempotency_key=key,
            at=at.isoformat(),
            gpu_count=8,
            price_per_gpu_hour="2.50",
        )
        assert answer.status_code == 201, answer.content


def test_estimates_are_compared_with_the_bill_on_whole_days_reported(world, run):
    report_a_whole_day(client_for(world.lead), run)
    for day, amount in [(date(2026, 1, 13), "500"), (date(2026, 1, 14), "130")]:
        make_cost_record(day, amount, project=world.project, training_run=run)

    [accuracy] = run_estimate_accuracy(run)  # the 14th, reported until 06:00, is not

    assert (accuracy.day, accuracy.estimate, accuracy.billed) == (
        date(2026, 1, 13),
        Decimal("480"),  # 24 h x 8 GPUs x 2.50
        Decimal("500"),
    )
    assert accuracy.off_percent == Decimal("-4.00")


def test_only_runs_that_report_are_restated_after_an_import(world, run):
    report_a_night(client_for(world.lead), run)
    quiet = make_run(world.project, name="Quiet", external_id="quiet")
    make_cost_record(date(2026, 1, 14), "44", project=world.project, training_run=run)
    make_cost_record(date(2026, 1, 14), "9", project=world.project, training_run=quiet)
    imported = ImportRun.objects.create(source_name="Test export")
    CostRecord.objects.update(import_run=imported)
    assert runs_reached_by_import(imported.pk) == [run.pk]


def test_a_real_worker_turns_a_heartbeat_into_an_estimate_within_moments(
    worker, world, run
):
    report_a_night(client_for(world.lead), run)
    assert wait_for(
        lambda: (
            CostRecord.objects.filter(source__kind=BillingSource.Kind.TELEMETRY).count()
            == 2
        )
    ), "no worker restated the estimate"


@pytest.mark.parametrize(
    "body, field",
    [
        ({"kind": "start", "idempotency_key": "k", "gpu_count": -1}, "gpu_count"),
        ({"kind": "start", "idempotency_key": "k", "gpus": 8}, "gpus"),
        ({"kind": "pause", "idempotency_key": "k"}, "kind"),
        ({"kind": "start"}, "idempotency_key"),
        (
            {"kind": "start", "idempotency_key": "k", "price_per_gpu_hour": "-2"},
            "price_per_gpu_hour",
        ),  # noqa: E501
        (
            {
                "kind": "start",
                "idempotency_key": "k",
                "gpu_count": 8,
                "outcome": "failed",
            },
            "outcome",
        ),  # noqa: E501
        (
            {
                "kind": "start",
                "idempotency_key": "k",
                "at": "2026-01-15T07:00:00Z",
                "gpu_count": 8,
            },
            "at",
        ),  # noqa: E501
        ({"kind": "start", "idempotency_key": "k"}, "gpu_count"),
        (
            {"kind": "start", "idempotency_key": "k", "gpu_count": 8, "unit": "tokens"},
            "unit",
        ),  # noqa: E501
    ],
)
def test_a_bad_event_gets_400_naming_its_field_and_changes_nothing(
    world, run, body, field
):
    answer = post(client_for(world.lead), run, **body)
    assert answer.status_code == 400, answer.content
    assert field in answer.json()
    assert not RunEvent.objects.exists()
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.PLANNED


def test_malformed_json_or_a_list_gets_400(world, run):
    client = client_for(world.lead)
    url = reverse("api_run_events", args=[run.pk])
    broken = client.post(url, "{kind: start", content_type="application/json")
    listed = client.post(
        url, json.dumps([{"kind": "start"}]), content_type="application/json"
    )  # noqa: E501
    assert (broken.status_code, listed.status_code) == (400, 400)
    assert "JSON parse error" in broken.json()["detail"]
    assert not RunEvent.objects.exists()


def test_a_replayed_key_a_second_start_and_events_after_stop_get_409(world, run):
    client = client_for(world.lead)
    first = {"kind": "start", "idempotency_key": "k", "gpu_count": 8}
    assert post(client, run, **first).status_code == 201

    replay = post(client, run, **{**first, "gpu_count": 64})
    again = post(client, run, kind="start", idempotency_key="k2", gpu_count=8)

    assert (replay.status_code, again.status_code) == (409, 409)
    assert "was recorded already" in replay.json()["detail"]
    assert "started already" in again.json()["detail"]
    assert list(run.events.values_list("gpu_count", flat=True)) == [8]
    assert post(client, run, kind="stop", idempotency_key="s").status_code == 201
    late = post(client, run, kind="heartbeat", idempotency_key="h", gpu_count=8)
    assert late.status_code == 409
    assert "completed: it takes no more events" in late.json()["detail"]
    assert run.events.count() == 2


def test_a_heartbeat_before_the_start_gets_409(world, run):
    answer = post(
        client_for(world.lead), run, kind="heartbeat", idempotency_key="h", gpu_count=1
    )
    assert answer.status_code == 409
    assert "send a start event first" in answer.json()["detail"]


def test_who_may_report_a_run(world, run):
    event = {"kind": "start", "idempotency_key": "k", "gpu_count": 8}
    assert post(client_for(world.outsider), run, **event).status_code == 404
    assert post(client_for(world.member), run, **event).status_code == 403
    assert post(client_for(world.finance), run, **event).status_code == 403
    assert post(APIClient(), run, **event).status_code == 401
    assert not RunEvent.objects.exists()
    assert (
        client_for(world.member)
        .get(reverse("api_run_events", args=[run.pk]))
        .status_code
        == 200
    )  # members read
    assert post(client_for(world.admin), run, **event).status_code == 201


@pytest.mark.django_db(transaction=True)
def test_the_same_key_sent_twice_at_once_is_one_event(world, run):
    """Two requests with one key race: the run's row lock takes them in turn and the
    second finds the first's event."""
    barrier = threading.Barrier(2)
    codes: list[int] = []

    def send() -> None:
        try:
            barrier.wait(10)
            codes.append(
                post(
                    client_for(world.lead),
                    run,
                    kind="start",
                    idempotency_key="same",
                    gpu_count=8,
                ).status_code
            )
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(codes) == [201, 409]
    assert RunEvent.objects.count() == 1


def test_an_import_reaching_the_run_replaces_its_estimates_once_announced(
    world, run, eager_tasks, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        report_a_night(client_for(world.lead), run)
    billed = make_cost_record(
        date(2026, 1, 15), "130", project=world.project, training_run=run
    )
    imported = ImportRun.objects.create(source=billed.source, source_name="Test export")
    CostRecord.objects.filter(pk=billed.pk).update(import_run=imported)

    import_finished_announce(imported)

    estimated = CostRecord.objects.filter(source__kind=BillingSource.Kind.TELEMETRY)
    assert [line.charge_period_start.date() for line in estimated] == [
        date(2026, 1, 14)
    ]


def test_the_run_page_shows_the_estimate_and_how_far_it_was_off(
    client, world, run, eager_tasks, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        report_a_whole_day(client_for(world.lead), run)
    make_cost_record(date(2026, 1, 13), "600", project=world.project, training_run=run)
    run_estimates_restate(run_id=run.pk)
    client.force_login(world.member)

    page = client.get(reverse("run_detail", args=[world.project.slug, run.pk]))

    text = " ".join(page.content.decode().split())
    assert "Last report: <strong>stop</strong> at 14 Jan 06:00 UTC, 8 × H100" in text
    # The 14th: 6 h x 8 GPUs x 2.50, still estimated.
    assert "<strong>$120</strong> of the actual to date is estimated" in text
    assert "over 1 day no billing data covers yet" in text
    # 480 estimated against 600 billed on the 13th.
    assert "the estimates came to $480 against $600 billed (−20%)" in text


def test_an_event_may_name_a_rate_card_entry_instead_of_a_price(world, run):
    GpuRate.objects.create(name="H100 on-demand", price_per_gpu_hour="3.10")
    GpuRate.objects.create(name="H100 EU", price_per_gpu_hour="2.90", currency="EUR")
    client = client_for(world.lead)
    start = {"kind": "start", "idempotency_key": "s", "gpu_count": 8}

    assert post(client, run, **start, rate="H100 on-demand").status_code == 201
    refused = [
        post(client, run, kind="heartbeat", idempotency_key="1", rate="A100"),
        post(client, run, kind="heartbeat", idempotency_key="2", rate="H100 EU"),
        post(
            client,
            run,
            kind="heartbeat",
            idempotency_key="3",
            rate="H100 on-demand",
            price_per_gpu_hour="1",
        ),
    ]

    assert run.events.get().price_per_gpu_hour == Decimal("3.10")
    assert [answer.status_code for answer in refused] == [400, 400, 400]
    assert [answer.json()["rate"][0][:40] for answer in refused] == [
        "The rate card has no entry 'A100' (finan",
        "'H100 EU' is priced in EUR, the run in U",
        "Give a price_per_gpu_hour or a rate-card",
    ]
