from datetime import date, timedelta
from pathlib import Path

from celery import shared_task
from django.utils import timezone

from billing.connection import connection_test_run
from billing.fx_rates import daily_costs_rebuild_in_months, rollup_span_for_rates
from billing.importers.base import ProviderError
from billing.invoices import compute_invoices_load
from billing.models import BillingSource, ImportRun
from billing.runs import import_run_claim, import_run_give_up, import_runs_sweep
from billing.services import (
    billing_sync_source,
    daily_costs_rebuild,
    import_run_execute,
    unallocated_costs_allocate,
)
from billing.sync import sources_to_sync
from core.tasks import RerunSafeTask

RECENT_DAYS = 45


@shared_task(base=RerunSafeTask)
def daily_costs_rebuild_recent() -> int:
    """Rebuild the rollup of the last weeks: the open and the previous billing month."""
    today = timezone.now().date()
    return daily_costs_rebuild(
        start=today - timedelta(days=RECENT_DAYS), end=today + timedelta(days=1)
    )


@shared_task(base=RerunSafeTask)
def rollup_rebuild_for_rates(changed: list[list[str]]) -> int:
    """Rebuild the rollup where rates entered or removed in the admin, given as
    [currency, ISO day] pairs, change a conversion; safe to run twice."""
    span = rollup_span_for_rates(
        (currency, date.fromisoformat(day)) for currency, day in changed
    )
    if span is None:
        return 0
    return daily_costs_rebuild_in_months(start=span[0], end=span[1])


@shared_task(base=RerunSafeTask)
def compute_invoices_load_task(invoice_ids: list[int] | None = None) -> str:
    """Restate approved invoices' cost: after an approval, and nightly for all."""
    return compute_invoices_load(invoice_ids=invoice_ids).status


@shared_task(base=RerunSafeTask)
def unallocated_costs_allocate_task(rule_id: int) -> bool:
    """Give a new rule the unallocated costs it matches; True when any moved."""
    return unallocated_costs_allocate(rule_id=rule_id) is not None


class ImportUploadTask(RerunSafeTask):
    def given_up(self, run_id: int) -> None:
        import_run_give_up(run_id=run_id)


@shared_task(base=ImportUploadTask)
def import_upload(run_id: int) -> str:
    """Import an uploaded delivery; its ImportRun already exists, so the portal can
    follow it from the moment of upload. Redelivered when its worker dies: the
    attempt is counted on the run, and one that is done, or held by a live worker,
    is left alone."""
    run = import_run_claim(run_id=run_id)
    if run is None or run.status != ImportRun.Status.RUNNING:
        return "already done" if run is None else run.status
    return import_run_execute(
        run=run, paths=[Path(run.upload.path)], names=[run.upload_name]
    ).run.status


@shared_task(
    base=RerunSafeTask,
    autoretry_for=(ProviderError,),
    retry_backoff=60,
    retry_backoff_max=60 * 60,
    retry_jitter=True,
    max_retries=6,
)
def billing_sync(source_id: int, attempt: int = 1) -> str:
    """Safe to run twice: an import replaces whole periods under a row lock."""
    return billing_sync_source(source_id=source_id, attempt=attempt).run.status


@shared_task(base=RerunSafeTask)
def billing_sync_due() -> int:
    """Enqueue every enabled source whose schedule says it is time."""
    now = timezone.now()
    ids = [
        source.pk
        for source in sources_to_sync()  # a handful: simpler than SQL date arithmetic
        if source.last_sync_at is None
        or source.last_sync_at <= now - timedelta(minutes=source.sync_every_minutes)
    ]
    for source_id in ids:
        billing_sync.delay(source_id)
    return len(ids)


@shared_task(base=RerunSafeTask)
def source_connection_test(source_id: int) -> dict | None:
    """Tests a source's connection (billing.connection); a second run only checks
    again. Gone meanwhile: nothing to test."""
    source = BillingSource.objects.filter(pk=source_id).first()
    return connection_test_run(source) if source else None


@shared_task(base=RerunSafeTask)
def import_runs_sweep_task() -> dict[str, int]:
    """Every five minutes: runs whose worker stopped, uploads waiting for the queue."""
    return import_runs_sweep(now=timezone.now()).as_json()
