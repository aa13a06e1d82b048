"""Approved compute invoices become cost through the same loader as every export.

All approved invoices are one billing source, "Compute invoices". A load restates whole
billing periods of that source (the calendar month of each invoice's period_start),
so approving, editing, rejecting or moving an invoice and loading again leaves exactly
the approved lines in CostRecord: draft and rejected invoices never produce cost.

An invoice names its project, so its rows carry the tags `project` and `training_run`:
the allocator's convention sends them there without anyone writing a rule (a rule
that matches them still comes first), and re-allocating history keeps them there.
"""

import hashlib
import json
from collections.abc import Iterable
from datetime import UTC, date, datetime
from functools import partial

from dateutil.relativedelta import relativedelta
from django.db import DatabaseError, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import User
from billing.allocation import PROJECT_TAG, RUN_TAG
from billing.importers import ImportFailure
from billing.importers.invoice_csv import invoice_line_row
from billing.loader import cost_records_load
from billing.models import (
    BillingSource,
    ComputeInvoice,
    ComputeInvoiceLine,
    CostRecord,
    ImportRun,
)
from billing.services import (
    _fail,
    _finish,
    _replace_periods,
    _same_file_still_loaded,
    source_lock,
)
from core.tasks import enqueue_after_commit

SOURCE_NAME = "Compute invoices"
RUN_NAME = "approved compute invoices"


def compute_invoices_queue_load(*, invoice_ids: list[int]) -> None:
    """Restate these invoices' cost in the worker once the change is committed."""
    from billing.tasks import compute_invoices_load_task  # tasks import this module

    enqueue_after_commit(compute_invoices_load_task, invoice_ids)


def compute_invoices_decide(
    *, invoice_ids: list[int], status: str, by: User, from_status: str = ""
) -> int:
    """Approve or reject invoices, or set them back to draft, noting who and when;
    their cost is restated in the worker once this commits. Returns how many: the
    invoices are locked first, so two people deciding at once are taken in turn, and
    with `from_status` only those still in it, once the first has decided, change."""
    if status not in ComputeInvoice.Status.values:
        raise ValueError(f"unknown invoice status {status!r}")
    with transaction.atomic():
        invoices = ComputeInvoice.objects.select_for_update().filter(pk__in=invoice_ids)
        if from_status:
            invoices = invoices.filter(status=from_status)
        ids = list(invoices.values_list("pk", flat=True))
        ComputeInvoice.objects.filter(pk__in=ids).update(
            status=status, decided_by=by, decided_at=timezone.now()
        )
        compute_invoices_queue_load(invoice_ids=ids)
    return len(ids)


def compute_invoices_load(*, invoice_ids: list[int] | None = None) -> ImportRun:
    """Load approved invoices into CostRecord, replacing the source's billing periods.

    Without `invoice_ids`, every period the source holds or an approved invoice falls
    in is restated. With them, the periods those invoices fall in now or fell in when
    last loaded are restated, with every approved invoice of those periods. Nothing
    changed since the last load: status "unchanged". A failure leaves the database
    as it was and is recorded on the run.
    """
    source, _ = BillingSource.objects.get_or_create(
        name=SOURCE_NAME, defaults={"kind": BillingSource.Kind.COMPUTE_INVOICE}
    )
    run = ImportRun.objects.create(source=source, file_name=RUN_NAME)
    try:
        with transaction.atomic():
            source_lock(source)  # a second load waits, then sees the first's data
            _restate(source, run, invoice_ids)
    except ImportFailure as failure:
        _fail(run, source, failure)
    except (DatabaseError, ValueError) as exc:
        _fail(run, source, f"{RUN_NAME}: {exc}")
    return run


def _restate(
    source: BillingSource, run: ImportRun, invoice_ids: list[int] | None
) -> None:
    if source.kind != BillingSource.Kind.COMPUTE_INVOICE:
        raise ImportFailure(
            f"the billing source {SOURCE_NAME!r} exists with kind {source.kind!r}; "
            "rename it so compute invoices do not replace its data"
        )
    periods = _periods_to_restate(source, invoice_ids)
    invoices = _approved_invoices(periods)
    rows = [_row(invoice, line) for invoice in invoices for line in invoice.lines.all()]
    run.checksum = _checksum(periods, rows)
    previous = _same_file_still_loaded(source, run.checksum, before=run)
    if previous:
        _finish(run, ImportRun.Status.UNCHANGED, previous=previous)
        return
    if not periods:  # no approved invoice, and none loaded before
        _finish(run, ImportRun.Status.IMPORTED)
        return
    _replace_periods(source, run, partial(cost_records_load, rows), periods=periods)


def _periods_to_restate(
    source: BillingSource, invoice_ids: list[int] | None
) -> set[datetime]:
    """Billing periods as the first instant of their month (UTC), as rows carry them."""
    loaded = CostRecord.objects.filter(source=source)
    invoices = ComputeInvoice.objects.all()
    if invoice_ids is None:
        invoices = invoices.filter(status=ComputeInvoice.Status.APPROVED)
    else:
        invoices = invoices.filter(pk__in=invoice_ids)
        named = Q(pk__in=[])
        for vendor, number in invoices.values_list("vendor", "invoice_number"):
            named |= Q(provider_name=vendor, invoice_id=number)
        loaded = loaded.filter(named)
    held = loaded.values_list("billing_period_start", flat=True).distinct().order_by()
    starts = invoices.values_list("period_start", flat=True)
    return set(held) | {_month(day) for day in starts}


def _approved_invoices(periods: Iterable[datetime]) -> list[ComputeInvoice]:
    in_periods = Q(pk__in=[])
    for period in periods:
        month = period.date()
        in_periods |= Q(
            period_start__gte=month, period_start__lt=month + relativedelta(months=1)
        )
    return list(
        ComputeInvoice.objects.filter(in_periods, status=ComputeInvoice.Status.APPROVED)
        .select_related("project", "training_run")
        .prefetch_related("lines")
        .order_by("pk")
    )


def _row(invoice: ComputeInvoice, line: ComputeInvoiceLine) -> dict:
    tags: dict[str, str] = {}
    if invoice.project:
        tags[PROJECT_TAG] = invoice.project.slug
    if invoice.training_run:
        tags[RUN_TAG] = invoice.training_run.external_id
    row = invoice_line_row(
        vendor=invoice.vendor,
        invoice_number=invoice.invoice_number,
        period_start=invoice.period_start,
        period_end=invoice.period_end,
        amount=line.amount,
        currency=invoice.currency,
        gpu_type=line.gpu_type,
        gpu_hours=line.gpu_hours,
        description=line.description,
        tags=tags,
    )
    return row


def _checksum(periods: Iterable[datetime], rows: list[dict]) -> str:
    """What the load would write: the same periods with the same rows, same digest."""
    content = {"periods": sorted(periods), "rows": rows}
    encoded = json.dumps(content, default=str, sort_keys=True).encode()
    return hashlib.sha256(encoded).hexdigest()


def _month(day: date) -> datetime:
    return datetime(day.year, day.month, 1, tzinfo=UTC)
