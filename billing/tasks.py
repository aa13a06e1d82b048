from datetime import date, timedelta
from pathlib import Path

from celery import shared_task
from django.utils import timezone

from billing.fx_rates import daily_costs_rebuild_in_months, rollup_span_for_rates
from billing.importers.base import ProviderError
from billing.invoices import compute_invoices_load
from billing.models import ImportRun
from billing.services import (
    billing_sync_source,
    daily_costs_rebuild,
    import_run_execute,
    unallocated_costs_allocate,
)
from billing.sync import sources_to_sync

RECENT_DAYS = 45


@shared_task
def daily_costs_rebuild_recent() -> int:
    """Rebuild the rollup of the last weeks: the open and the previous billing month."""
    today = timezone.now().date()
    return daily_costs_rebuild(
        start=today - timedelta(days=RECENT_DAYS), end=today + timedelta(days=1)
    )


@shared_task
def rollup_rebuild_for_rates(changed: list[list[str]]) -> int:
    """Rebuild the rollup where rates entered or removed in the admin, given as
    [currency, ISO day] pairs, change a conversion; safe to run twice."""
    span = rollup_span_for_rates(
        (currency, date.fromisoformat(day)) for currency, day in changed
    )
    if span is None:
        return 0
    return daily_costs_rebuild_in_months(start=span[0], end=span[1])


@shared_task
def compute_invoices_load_task(invoice_ids: list[int] | None = None) -> str:
    """Restate approved invoices' cost: after an approval, and nightly for all."""
    return compute_invoices_load(invoice_ids=invoice_ids).status


@shared_task
def unallocated_costs_allocate_task(rule_id: int) -> bool:
    """Give a new rule the unallocated costs it matches; True when any moved."""
    return unallocated_costs_allocate(rule_id=rule_id) is not None


@shared_task
def import_upload(run_id: int) -> str:
    """Import an uploaded delivery; its ImportRun already exists, so the portal can
    follow it from the moment of upload."""
    run = ImportRun.objects.select_related("source").get(pk=run_id)
    if run.status != ImportRun.Status.RUNNING:
        return run.status  # already done: a redelivered message changes nothing
    return import_run_execute(
        run=run, paths=[Path(run.upload.path)], names=[run.upload_name]
    ).run.status


@shared_task(
    autoretry_for=(ProviderError,),
    retry_backoff=60,
    retry_backoff_max=60 * 60,
    retry_jitter=True,
    max_retries=6,
)
def billing_sync(source_id: int) -> str:
    """Safe to run twice: an import replaces whole periods under a row lock."""
    return billing_sync_source(source_id=source_id).run.status


@shared_task
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
