"""A Hugging Face `transformers` callback that reports the run to Spendtracker.

    from spendtracker_reporter import RunReporter
    from hf_callback import SpendtrackerCallback

    reporter = RunReporter("https://spend.example.com", token, run_id=42)
    trainer = Trainer(..., callbacks=[SpendtrackerCallback(
        reporter, gpu_count=8, gpu_type="H100", price_per_gpu_hour="2.49")])

It reports the start, the steps done every `every_seconds` (the run's progress unit
must be steps), and the end. Only the main process reports, once per run, whatever the
number of GPUs.
"""

import time
from decimal import Decimal

from spendtracker_reporter import RunReporter
from transformers import TrainerCallback


class SpendtrackerCallback(TrainerCallback):
    def __init__(
        self,
        reporter: RunReporter,
        *,
        gpu_count: int,
        gpu_type: str = "",
        price_per_gpu_hour: Decimal | str | None = None,
        every_seconds: float = 300.0,
        clock=time.monotonic,
    ) -> None:
        self.reporter, self.every, self.clock = reporter, every_seconds, clock
        self.gpus = {
            "gpu_count": gpu_count,
            "gpu_type": gpu_type,
            "price_per_gpu_hour": price_per_gpu_hour,
        }
        self._reported_at = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.reporter.start(**self.gpus)
            self._reported_at = self.clock()

    def on_step_end(self, args, state, control, **kwargs):
        if (
            state.is_world_process_zero
            and self.clock() - self._reported_at >= self.every
        ):
            self.reporter.heartbeat(units_done=state.global_step, unit="steps")
            self._reported_at = self.clock()

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.reporter.heartbeat(units_done=state.global_step, unit="steps")
            self.reporter.stop()
