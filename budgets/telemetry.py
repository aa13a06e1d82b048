"""Run telemetry: what a training run reports of itself, and the cost estimated from it.

A run posts `start`, then `heartbeat`s, then `stop` (POST /api/v1/runs/{id}/events/),
each with an idempotency key. From one event to the next the run used the GPUs the
first one named, at its price per GPU-hour: that is its estimate, split by UTC day and
kept as provisional cost lines of the "Run telemetry" source, allocated to the run, so
spend, forecasts and alerts move within minutes of the run's own reports instead of
the day or two billing data takes. The last event's GPUs count from the next event
on: an estimate never runs ahead of what the run has said.

Once billing data for a day is imported and allocated to the run, that day's estimate
is dropped, never added to it: a day of a run is either estimated or billed. The
estimates of billed days stay computable from the events, so the run page shows how
far they were off.
"""

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from itertools import pairwise

from dateutil.relativedelta import relativedelta
from django.db import transaction
from django.db.models import Count, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from accounts.models import User
from billing.models import COST_DIGITS, BillingSource, CostRecord
from billing.services import daily_costs_rebuild
from budgets.models import GpuRate, RunEvent
from core.currencies import ZERO
from core.dates import month_start
from core.tasks import enqueue_after_commit
from projects.models import TrainingRun

SOURCE_NAME = "Run telemetry"
# A run's clock may be a little ahead of ours; an event further ahead is refused.
CLOCK_SKEW = timedelta(minutes=5)
CENTS = Decimal("0.01")
COST_PLACES = Decimal(1).scaleb(-COST_DIGITS["decimal_places"])
FINISHED = (
    TrainingRun.Status.COMPLETED,
    TrainingRun.Status.FAILED,
    TrainingRun.Status.CANCELLED,
)
Kind = RunEvent.Kind


class EventRefused(Exception):
    """An event the run cannot take, with why; `conflict` when the request itself is
    well-formed but the run's state refuses it (a replayed key, a finished run)."""

    def __init__(self, message: str, *, field: str = "", conflict: bool = False):
        super().__init__(message)
        self.field, self.conflict = field, conflict


def run_event_record(
    *,
    run: TrainingRun,
    kind: str,
    idempotency_key: str,
    by: User | None,
    at: datetime | None = None,
    gpu_count: int | None = None,
    gpu_type: str = "",
    price_per_gpu_hour: Decimal | None = None,
    units_done: Decimal | None = None,
    unit: str = "",
    rate: str = "",
    outcome: str = TrainingRun.Status.COMPLETED,
) -> RunEvent:
    """Record one event of the run and queue its estimate's restatement; refuse
    (EventRefused) what would make the run's story inconsistent. Events of one run are
    taken one at a time (its row is locked), so a key sent twice at once is one event.
    What a heartbeat leaves out (GPUs, price) is what the run last said."""
    from budgets.tasks import run_estimates_restate_task  # tasks import this module

    now = timezone.now()
    at = at or now
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run.pk)
        # A run may report every minute for weeks: what the checks need is read by
        # query, never the whole history.
        events = run.events.all()
        if events.filter(idempotency_key=idempotency_key).exists():
            raise EventRefused(
                f"An event with the idempotency key {idempotency_key!r} was recorded "
                "already; it is not recorded twice.",
                field="idempotency_key",
                conflict=True,
            )
        started = events.filter(kind=Kind.START).first()
        stopped = events.filter(kind=Kind.STOP).exists()
        _check(run, started, stopped, kind=kind, at=at, now=now, unit=unit)
        last = events.last()
        if gpu_count is None and last is not None:
            gpu_count = last.gpu_count
        if gpu_count is None:
            raise EventRefused(
                "Say how many GPUs the run uses (gpu_count).", field="gpu_count"
            )
        if rate:
            price_per_gpu_hour = _rate_card_price(run, rate, price_per_gpu_hour)
        if price_per_gpu_hour is None:
            price_per_gpu_hour = (
                last.price_per_gpu_hour if last is not None else run.rate_per_gpu_hour
            )
        event = RunEvent.objects.create(
            run=run,
            kind=kind,
            idempotency_key=idempotency_key,
            at=at,
            gpu_count=gpu_count,
            gpu_type=gpu_type or (last.gpu_type if last else run.gpu_type),
            price_per_gpu_hour=price_per_gpu_hour,
            units_done=units_done,
            reported_by=by,
        )
        _run_update(run, kind=kind, units_done=units_done, outcome=outcome)
        enqueue_after_commit(run_estimates_restate_task, run.pk)
    return event


def _check(
    run: TrainingRun,
    started: RunEvent | None,
    stopped: bool,
    *,
    kind: str,
    at: datetime,
    now: datetime,
    unit: str,
) -> None:
    if run.status in FINISHED or stopped:
        raise EventRefused(
            f"The run is {run.get_status_display().lower()}: it takes no more events.",
            conflict=True,
        )
    if kind == Kind.START and started is not None:
        raise EventRefused(
            f"The run started already, at {started.at:%Y-%m-%d %H:%M} UTC.",
            field="kind",
            conflict=True,
        )
    if kind != Kind.START and started is None:
        raise EventRefused(
            "The run has not started: send a start event first.",
            field="kind",
            conflict=True,
        )
    if at > now + CLOCK_SKEW:
        raise EventRefused(f"{at:%Y-%m-%d %H:%M} UTC is in the future.", field="at")
    if started is not None and at < started.at:
        raise EventRefused(
            f"{at:%Y-%m-%d %H:%M} UTC is before the run started "
            f"({started.at:%Y-%m-%d %H:%M} UTC).",
            field="at",
        )
    if unit and unit != run.progress_unit:
        counted = run.progress_unit or "nothing (its plan names no unit)"
        raise EventRefused(
            f"The run counts its progress in {counted}, not {unit}.", field="unit"
        )


def _rate_card_price(run: TrainingRun, name: str, price: Decimal | None) -> Decimal:
    """The price of the rate card's entry `name`, in the run's currency."""
    if price is not None:
        raise EventRefused(
            "Give a price_per_gpu_hour or a rate-card entry, not both.", field="rate"
        )
    entry = GpuRate.objects.filter(name=name).first()
    if entry is None:
        raise EventRefused(
            f"The rate card has no entry {name!r} (finance keeps it in Django admin, "
            "under Gpu rates).",
            field="rate",
        )
    if entry.currency != run.currency:
        raise EventRefused(
            f"{name!r} is priced in {entry.currency}, the run in {run.currency}.",
            field="rate",
        )
    return entry.price_per_gpu_hour


def _run_update(
    run: TrainingRun, *, kind: str, units_done: Decimal | None, outcome: str
) -> None:
    fields = []
    if kind == Kind.START and run.status == TrainingRun.Status.PLANNED:
        run.status = TrainingRun.Status.RUNNING
        fields.append("status")
    if kind == Kind.STOP:
        run.status = outcome
        fields.append("status")
    if units_done is not None and run.progress_unit:
        # Earned value reads units_done against the plan's units.
        run.units_done = units_done
        fields.append("units_done")
    if fields:
        run.save(update_fields=fields)


# The estimate ------------------------------------------------------------------


@dataclass
class DayEstimate:
    gpu_hours: Decimal = ZERO
    cost: Decimal = ZERO


def estimated_by_day(events: list[RunEvent]) -> dict[date, DayEstimate]:
    """GPU-hours and cost by UTC day: from each event to the next, its GPUs at its
    price. Events are taken in the order the run says they happened."""
    days: dict[date, DayEstimate] = {}
    ordered = sorted(events, key=lambda event: (event.at, event.pk))
    for first, then in pairwise(ordered):
        if first.kind == Kind.STOP:
            break
        moment = first.at
        while moment < then.at:
            next_day = moment.date() + timedelta(days=1)
            until = min(datetime.combine(next_day, time.min, UTC), then.at)
            hours = Decimal((until - moment).total_seconds()) / 3600
            day = days.setdefault(moment.date(), DayEstimate())
            gpu_hours = hours * (first.gpu_count or 0)
            day.gpu_hours += gpu_hours
            day.cost += gpu_hours * (first.price_per_gpu_hour or ZERO)
            moment = until
    for day in days.values():
        day.cost = day.cost.quantize(COST_PLACES)
    return days


def telemetry_source() -> BillingSource:
    source, _ = BillingSource.objects.get_or_create(
        kind=BillingSource.Kind.TELEMETRY, defaults={"name": SOURCE_NAME}
    )
    return source


def _billed_days(run: TrainingRun) -> dict[date, Decimal]:
    """The run's billed cost by UTC day, from every source but the telemetry."""
    rows = (
        CostRecord.objects.filter(training_run=run)
        .exclude(source__kind=BillingSource.Kind.TELEMETRY)
        .annotate(day=TruncDate("charge_period_start", tzinfo=UTC))
        .values("day")
        .annotate(cost=Sum("effective_cost"))
        .order_by()
    )
    return {row["day"]: row["cost"] for row in rows}


@transaction.atomic
def run_estimates_restate(*, run_id: int) -> int:
    """Replace the run's estimate lines with those its events give for the days no
    billing data covers, and rebuild the rollup of the days that changed; how many
    lines. Safe to run twice: it rewrites the same lines."""
    run = TrainingRun.objects.select_for_update().filter(pk=run_id).first()
    if run is None:
        return 0
    source = telemetry_source()
    billed = _billed_days(run)
    estimates = {
        day: estimate
        for day, estimate in estimated_by_day(list(run.events.all())).items()
        if day not in billed and estimate.cost
    }
    stale = CostRecord.objects.filter(source=source, training_run=run)
    days = set(
        stale.annotate(day=TruncDate("charge_period_start", tzinfo=UTC)).values_list(
            "day", flat=True
        )
    )
    stale.delete()
    CostRecord.objects.bulk_create(
        _estimate_line(run, source, day, estimate)
        for day, estimate in estimates.items()
    )
    days |= set(estimates)
    if days:
        daily_costs_rebuild(start=min(days), end=max(days) + timedelta(days=1))
    return len(estimates)


def runs_reached_by_import(import_run_id: int) -> list[int]:
    """The runs that report telemetry and got cost lines from this import."""
    return list(
        CostRecord.objects.filter(
            import_run_id=import_run_id, training_run__events__isnull=False
        )
        .values_list("training_run", flat=True)
        .distinct()
        .order_by("training_run")
    )


def _estimate_line(
    run: TrainingRun, source: BillingSource, day: date, estimate: DayEstimate
) -> CostRecord:
    start = datetime.combine(day, time.min, UTC)
    month = datetime.combine(month_start(day), time.min, UTC)
    return CostRecord(
        source=source,
        billing_account_id="telemetry",
        billing_account_name=SOURCE_NAME,
        billing_period_start=month,
        billing_period_end=month + relativedelta(months=1),
        charge_period_start=start,
        charge_period_end=start + timedelta(days=1),
        charge_category="Usage",
        charge_description=f"Estimate from the reports of run {run.name}",
        billing_currency=run.currency,
        provider_name=SOURCE_NAME,
        service_name="GPU compute (estimate)",
        service_category="Compute",
        resource_id=f"run/{run.pk}",
        resource_name=run.name,
        consumed_quantity=estimate.gpu_hours,
        consumed_unit="GPU-hours",
        billed_cost=estimate.cost,
        effective_cost=estimate.cost,
        list_cost=estimate.cost,
        contracted_cost=estimate.cost,
        is_provisional=True,
        project=run.project,
        training_run=run,
    )


# Estimate against billed -------------------------------------------------------


@dataclass(frozen=True)
class DayAccuracy:
    day: date
    estimate: Decimal
    billed: Decimal

    @property
    def off_percent(self) -> Decimal | None:
        if not self.billed:
            return None
        return ((self.estimate - self.billed) / self.billed * 100).quantize(CENTS)


def run_estimate_accuracy(run: TrainingRun) -> list[DayAccuracy]:
    """For each whole day the run reported (its reports span the day from midnight
    to midnight) and billing data has come in for: what the events estimated and
    what was billed. A day reported in part would compare hours with a day."""
    events = list(run.events.all())
    if not events:
        return []
    first, last = min(e.at for e in events), max(e.at for e in events)
    billed = _billed_days(run)
    whole = [
        day
        for day in billed
        if first <= datetime.combine(day, time.min, UTC)
        and datetime.combine(day + timedelta(days=1), time.min, UTC) <= last
    ]
    estimated = estimated_by_day(events)
    return [
        DayAccuracy(
            day=day,
            estimate=estimated.get(day, DayEstimate()).cost,
            billed=billed[day],
        )
        for day in sorted(whole)
    ]


@dataclass(frozen=True)
class RunTelemetry:
    """What the run page shows of a run's own reports."""

    last_event: RunEvent | None
    estimated: Decimal  # the estimate lines still counted: days not billed yet
    estimated_days: int
    accuracy: list[DayAccuracy]

    @property
    def compared(self) -> DayAccuracy | None:
        """Every billed day together, as one comparison."""
        if not self.accuracy:
            return None
        return DayAccuracy(
            day=self.accuracy[-1].day,
            estimate=sum((day.estimate for day in self.accuracy), ZERO),
            billed=sum((day.billed for day in self.accuracy), ZERO),
        )


def run_telemetry(run: TrainingRun) -> RunTelemetry:
    counted = CostRecord.objects.filter(
        training_run=run, source__kind=BillingSource.Kind.TELEMETRY
    ).aggregate(cost=Sum("effective_cost"), days=Count("pk"))
    return RunTelemetry(
        last_event=run.events.order_by("at", "pk").last(),
        estimated=counted["cost"] or ZERO,
        estimated_days=counted["days"],
        accuracy=run_estimate_accuracy(run),
    )
