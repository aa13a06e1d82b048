"""Report a plain PyTorch (or any) training loop to Spendtracker.

    from spendtracker_reporter import RunReporter
    from training_loop import reported_run

    reporter = RunReporter("https://spend.example.com", token, run_id=42)
    with reported_run(reporter, gpu_count=8, gpu_type="H100") as run:
        for step, batch in enumerate(loader, start=1):
            ...  # forward, backward, optimiser step
            run.progress(step)

The start is reported on entering, the progress every `every_seconds`, and the stop
on leaving: `completed`, or `failed` when the loop raised (the error goes on).
"""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal

from spendtracker_reporter import RunReporter


class Progress:
    def __init__(self, reporter: RunReporter, unit: str, every: float, clock) -> None:
        self.reporter, self.unit, self.every, self.clock = reporter, unit, every, clock
        self.units_done: float | None = None
        self._reported_at = clock()

    def progress(self, units_done: float) -> None:
        """The units done so far (steps, tokens or epochs: the run's unit)."""
        self.units_done = units_done
        if self.clock() - self._reported_at >= self.every:
            self.flush()

    def flush(self) -> None:
        if self.units_done is not None:
            self.reporter.heartbeat(units_done=self.units_done, unit=self.unit)
        self._reported_at = self.clock()


@contextmanager
def reported_run(
    reporter: RunReporter,
    *,
    gpu_count: int,
    gpu_type: str = "",
    price_per_gpu_hour: Decimal | str | None = None,
    unit: str = "steps",
    every_seconds: float = 300.0,
    clock=time.monotonic,
) -> Iterator[Progress]:
    reporter.start(
        gpu_count=gpu_count, gpu_type=gpu_type, price_per_gpu_hour=price_per_gpu_hour
    )
    run = Progress(reporter, unit, every_seconds, clock)
    try:
        yield run
    except BaseException:
        run.flush()
        reporter.stop(outcome="failed")
        raise
    run.flush()
    reporter.stop()
