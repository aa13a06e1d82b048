"""The examples in examples/ report a run to a live portal, as a training script
would: the plain client, the Hugging Face callback and the training-loop helper."""

import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from transformers import TrainerControl, TrainerState, TrainingArguments

from budgets.models import RunEvent
from projects.models import TrainingRun
from projects.tokens import api_token_create
from tests.conftest import make_run

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(autouse=True)
def examples_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    yield
    for name in ("spendtracker_reporter", "hf_callback", "training_loop"):
        sys.modules.pop(name, None)


@pytest.fixture
def run(transactional_db, world, time_machine):
    time_machine.move_to(datetime(2026, 1, 15, 6, tzinfo=UTC))
    return make_run(
        world.project,
        name="Callback run",
        external_id="callback-run",
        progress_unit=TrainingRun.ProgressUnit.STEPS,
        units_planned=Decimal("300"),
    )


@pytest.fixture
def reporter(live_server, world, run):
    from spendtracker_reporter import RunReporter

    # A run reporter's token of the project, as a training job would be given.
    _, key = api_token_create(
        user=world.lead, name="trainer", expires_in_days=30, project=world.project
    )
    return RunReporter(live_server.url, key, run.pk, strict=True, attempts=1)


class Clock:
    """Each call is a minute later, so every step is due for a heartbeat."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 60
        return self.now


def test_the_client_reports_a_run_and_a_refused_event_says_why(reporter, run):
    from spendtracker_reporter import ReportRefused

    reporter.start(gpu_count=8, gpu_type="H100", price_per_gpu_hour="2.49")
    reporter.heartbeat(units_done=120, unit="steps")
    with pytest.raises(ReportRefused, match="400.*counts its progress in steps"):
        reporter.heartbeat(units_done=5, unit="tokens")
    reporter.stop()

    assert list(run.events.values_list("kind", "units_done")) == [
        ("start", None),
        ("heartbeat", Decimal("120")),
        ("stop", None),
    ]
    run.refresh_from_db()
    assert (run.status, run.units_done) == ("completed", Decimal("120"))


def test_the_hugging_face_callback_reports_start_steps_and_end(reporter, run, tmp_path):
    from hf_callback import SpendtrackerCallback

    callback = SpendtrackerCallback(
        reporter, gpu_count=8, gpu_type="H100", every_seconds=60, clock=Clock()
    )
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[])
    state, control = TrainerState(), TrainerControl()

    callback.on_train_begin(args, state, control)
    for step in (1, 2, 3):
        state.global_step = step
        callback.on_step_end(args, state, control)
    callback.on_train_end(args, state, control)

    events = list(run.events.values_list("kind", "units_done"))
    assert events[0] == ("start", None)
    assert events[1:4] == [("heartbeat", Decimal(step)) for step in (1, 2, 3)]
    assert events[-1] == ("stop", None)
    assert RunEvent.objects.filter(run=run, gpu_count=8).count() == len(events)


def test_the_training_loop_helper_reports_a_failure_as_failed(reporter, run):
    from training_loop import reported_run

    with (
        pytest.raises(RuntimeError, match="out of memory"),
        reported_run(reporter, gpu_count=4, every_seconds=60, clock=Clock()) as job,
    ):
        job.progress(10)
        raise RuntimeError("CUDA out of memory")

    assert list(run.events.values_list("kind", flat=True)) == [
        "start",
        "heartbeat",
        "heartbeat",
        "stop",
    ]
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED
