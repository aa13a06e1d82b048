import json
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Count, Sum
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.text import slugify
from django.views.decorators.http import require_POST

from accounts.permissions import (
    require_billing_operator,
    require_invoice_approver,
    require_source_editor,
)
from billing.connection import (
    connection_test_queue,
    connection_test_shown,
    connection_testable,
)
from billing.explorer import (
    DRILL_DOWN,
    MEASURES,
    NONE,
    Exploration,
    ExplorerQuery,
    explore,
    records_in_range,
)
from billing.forms import (
    ENDPOINT_CHANGED,
    BillingSourceForm,
    ExplorerForm,
    UploadForm,
    upload_too_heavy,
)
from billing.invoices import compute_invoices_decide
from billing.models import BillingSource, ComputeInvoice, ImportRun
from billing.selectors import (
    import_destinations,
    import_months,
    invoice_get_for_user,
    invoices_visible_to,
)
from billing.services import (
    LockWaitTimeout,
    NewSource,
    SourceHoldsData,
    billing_source_delete,
    billing_source_save,
    billing_upload_accept,
    import_progress,
    source_delete_refusal,
)
from billing.sync import fetcher_for
from core.crypto import UNREADABLE_SHORT
from core.dates import next_month
from core.exports import csv_response


@login_required
def invoice_list(request: HttpRequest) -> HttpResponse:
    invoices = (
        invoices_visible_to(request.user)
        .select_related("project", "training_run")
        .annotate(amount=Sum("lines__amount"))
    )
    status = request.GET.get("status", "")
    if status in ComputeInvoice.Status.values:
        invoices = invoices.filter(status=status)
    return render(
        request,
        "billing/invoice_list.html",
        {"invoices": invoices, "status": status, "statuses": ComputeInvoice.Status},
    )


@login_required
def invoice_detail(request: HttpRequest, pk: int) -> HttpResponse:
    invoice = invoice_get_for_user(request.user, pk)
    return render(
        request,
        "billing/invoice_detail.html",
        {
            "invoice": invoice,
            "lines": invoice.lines.all(),
            "decisions": INVOICE_DECISIONS[Invoice(invoice.status)],
        },
    )


# What finance can do to an invoice in each status: (status it goes to, button).
Invoice = ComputeInvoice.Status
INVOICE_DECISIONS = {
    Invoice.DRAFT: [(Invoice.APPROVED, "Approve"), (Invoice.REJECTED, "Reject")],
    Invoice.APPROVED: [(Invoice.DRAFT, "Set back to draft")],
    Invoice.REJECTED: [(Invoice.DRAFT, "Set back to draft")],
}
DECIDED = {
    Invoice.APPROVED: "approved: it counts as cost",
    Invoice.REJECTED: "rejected: it adds no cost",
    Invoice.DRAFT: "set back to draft: it adds no cost until approved",
}


@login_required
@require_POST
def invoice_decide(request: HttpRequest, pk: int) -> HttpResponse:
    invoice = invoice_get_for_user(request.user, pk)
    require_invoice_approver(request.user)
    status = request.POST.get("status", "")
    allowed = dict(INVOICE_DECISIONS[Invoice(invoice.status)])
    if status not in allowed:
        messages.error(
            request,
            f"{invoice.invoice_number} is {invoice.get_status_display().lower()}: "
            "it cannot go from there to what was asked (the page was out of date?).",
        )
    elif not compute_invoices_decide(
        invoice_ids=[invoice.pk],
        status=status,
        by=request.user,
        from_status=invoice.status,
    ):
        messages.error(
            request,
            f"Someone else decided on {invoice.invoice_number} meanwhile; "
            "here is where it stands now.",
        )
    else:
        messages.success(
            request,
            f"{invoice.vendor} {invoice.invoice_number} is "
            f"{DECIDED[Invoice(status)]}. The figures of its month are "
            "being restated in the background.",
        )
    return redirect(invoice)


@login_required
def source_list(request: HttpRequest) -> HttpResponse:
    require_billing_operator(request.user)
    sources = BillingSource.objects.annotate(
        imports=Count("import_runs", distinct=True),
        records=Count("cost_records", distinct=True),
    )
    return render(request, "billing/source_list.html", {"sources": sources})


@login_required
def source_detail(request: HttpRequest, pk: int) -> HttpResponse:
    require_billing_operator(request.user)
    source = get_object_or_404(BillingSource, pk=pk)
    return render(
        request,
        "billing/source_detail.html",
        {
            "source": source,
            "runs": source.import_runs.all()[:50],
            "credentials": source.masked_credentials,
            "unreadable": UNREADABLE_SHORT,
            "testable": connection_testable(source),
            "test": connection_test_shown(source),
        },
    )


@login_required
@require_POST
def source_test(request: HttpRequest, pk: int) -> HttpResponse:
    """Queues a connection test: it asks the provider over the network, so a worker
    runs it and the source's page shows the outcome."""
    require_billing_operator(request.user)
    source = get_object_or_404(BillingSource, pk=pk)
    require_source_editor(request.user)
    if not connection_testable(source):
        messages.error(
            request,
            f"A {source.get_kind_display()} source has no connection to test: its "
            "data comes from uploads.",
        )
        return redirect(source)
    connection_test_queue(source=source)
    messages.success(
        request,
        "The connection test is queued: this page shows its outcome in a minute.",
    )
    return redirect(source)


@login_required
def source_create(request: HttpRequest) -> HttpResponse:
    return source_form(request, BillingSource())


@login_required
def source_edit(request: HttpRequest, pk: int) -> HttpResponse:
    require_billing_operator(request.user)
    return source_form(request, get_object_or_404(BillingSource, pk=pk))


# billing_sync_due looks for due sources this often (settings.CELERY_BEAT_SCHEDULE).
SYNC_DUE_EVERY_MINUTES = 15


def first_data_expected(source: BillingSource) -> str:
    """When a new source's first data can be expected, in words."""
    if fetcher_for(source) is None:  # an S3 or Azure source without a bucket too
        return f"Upload its files at {reverse('upload')}."
    if not source.is_enabled:
        return (
            "It is disabled: once enabled, its first sync runs within "
            f"{SYNC_DUE_EVERY_MINUTES} minutes."
        )
    return (
        f"The first sync runs within {SYNC_DUE_EVERY_MINUTES} minutes, then every "
        f"{source.sync_every_minutes} minutes."
    )


def source_form(request: HttpRequest, source: BillingSource) -> HttpResponse:
    """Admins add and change sources here as in Django admin, with the same form:
    endpoint checks, write-only credentials, credentials cleared on a new endpoint."""
    require_source_editor(request.user)
    adding = source.pk is None
    form = BillingSourceForm(request.POST or None, instance=source)
    if request.method == "POST" and form.is_valid():
        source = billing_source_save(form=form)
        if form.credentials_cleared:
            messages.warning(request, ENDPOINT_CHANGED)
        saved = "added" if adding else "saved"
        note = f" {first_data_expected(source)}" if adding else ""
        messages.success(request, f"The source “{source.name}” was {saved}.{note}")
        return redirect(source)
    context = {
        "form": form,
        "source": source,
        "adding": adding,
        "credentials": None if adding else source.masked_credentials,
        "unreadable": UNREADABLE_SHORT,
    }
    return render(request, "billing/source_form.html", context)


@login_required
def source_delete(request: HttpRequest, pk: int) -> HttpResponse:
    """Finance deletes a source that holds no data (one a typo created): the page
    asks to confirm, or says why it may not."""
    require_billing_operator(request.user)
    source = get_object_or_404(BillingSource, pk=pk)
    if request.method == "POST":
        try:
            billing_source_delete(source=source)
        except (SourceHoldsData, LockWaitTimeout) as refused:
            context = {"source": source, "refusal": str(refused)}
            return render(request, "billing/source_delete.html", context, status=409)
        messages.success(request, f"The source “{source.name}” was deleted.")
        return redirect("source_list")
    context = {
        "source": source,
        "refusal": source_delete_refusal(source),
        "failed_imports": source.import_runs.count(),
    }
    return render(request, "billing/source_delete.html", context)


@login_required
def import_list(request: HttpRequest) -> HttpResponse:
    require_billing_operator(request.user)
    runs = ImportRun.objects.select_related("source")[:200]
    return render(request, "billing/import_list.html", {"runs": runs})


@login_required
def import_detail(request: HttpRequest, pk: int) -> HttpResponse:
    require_billing_operator(request.user)
    run = get_object_or_404(ImportRun.objects.select_related("source"), pk=pk)
    months = import_months(run)
    return render(
        request,
        "billing/import_detail.html",
        {
            "run": run,
            "progress": import_progress(run),
            "months": months,
            "last_day": next_month(months[-1]) - timedelta(days=1) if months else None,
            "destinations": import_destinations(run),
            "reporting_currency": settings.REPORTING_CURRENCY,
        },
    )


@login_required
def import_status(request: HttpRequest, pk: int) -> JsonResponse:
    """What the upload page polls while the worker imports."""
    require_billing_operator(request.user)
    run = get_object_or_404(ImportRun, pk=pk)
    return JsonResponse(
        {
            "status": run.status,
            "rows": run.rows_loaded or import_progress(run),
            "error": run.error or None,
            "url": run.get_absolute_url(),
        }
    )


@login_required
def upload(request: HttpRequest) -> HttpResponse:
    require_billing_operator(request.user)
    form = UploadForm(
        request.POST or None,
        request.FILES or None,
        initial={"source": request.GET.get("source", "")},
    )
    if request.method == "POST":
        if weight := getattr(request, "upload_weight", None):
            refused = {"file": [upload_too_heavy(weight)]}
            return JsonResponse({"errors": refused}, status=400)
        if not form.is_valid():
            return JsonResponse({"errors": form.errors}, status=400)
        source = form.upload_source()
        try:
            with transaction.atomic():
                run = billing_upload_accept(
                    uploaded=form.cleaned_data["file"],
                    source=source,
                    file_format=form.cleaned_data["file_format"],
                    period=form.cleaned_data["period"],
                    currency=form.cleaned_data["currency"],
                    allow_overlap=form.cleaned_data["allow_overlap"],
                )
        except ValidationError as refused:
            # The new source's name is another source's, in any letters; or the
            # chosen source was deleted meanwhile.
            field = "new_source_name" if isinstance(source, NewSource) else "source"
            return JsonResponse({"errors": {field: refused.messages}}, status=400)
        # The run is saved either way: taken by the queue, or left queued (the
        # queue down) for the sweep to hand over once it is back.
        return JsonResponse(
            {
                "run": run.pk,
                "status": run.status,
                "message": run.error or "Importing…",
                "status_url": reverse("import_status", args=[run.pk]),
            },
            status=202,
        )
    return render(request, "billing/upload.html", {"form": form})


def _explorer_form(request: HttpRequest) -> ExplorerForm:
    return ExplorerForm(request.GET, user=request.user, today=timezone.now().date())


EXPLORER_TABLE_ROWS = 200  # the page's table; the CSV has every group
# Filters folded under "More filters" unless one of them is set.
MORE_FILTERS = (
    "run",
    "source",
    "provider",
    "service",
    "service_category",
    "charge_category",
    "provisional",
    "region",
    "sub_account",
    "resource",
    "tag",
)


def _form_context(request: HttpRequest, form: ExplorerForm) -> dict:
    return {
        "form": form,
        "tag_values": [text for text in request.GET.getlist("tag") if text.strip()],
        "more_filters_open": any(request.GET.get(name) for name in MORE_FILTERS)
        or any(form.errors.get(name) for name in MORE_FILTERS),
    }


def _refused(request: HttpRequest, form: ExplorerForm, template: str) -> HttpResponse:
    """A question the explorer cannot answer: the form and why, with a 400."""
    return render(request, template, _form_context(request, form), status=400)


CENT = Decimal("0.01")


def _cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, ROUND_HALF_UP)


def _chart(result: Exploration) -> dict:
    """The chart's data for charts.js: money as decimal strings, never floats."""
    grain = "%-d %b" if result.query.grain == "day" else "%b %Y"
    return {
        "labels": [f"{bucket:{grain}}" for bucket in result.buckets],
        "series": [
            {"label": label, "data": [str(_cents(amount)) for amount in amounts]}
            for label, amounts in result.series
        ],
    }


@login_required
def cost_explorer(request: HttpRequest) -> HttpResponse:
    form = _explorer_form(request)
    if not form.is_valid():
        return _refused(request, form, "billing/cost_explorer.html")
    query = form.query()
    result = explore(user=request.user, query=query)
    drill_to = DRILL_DOWN.get(query.group_by, "service")
    rows = [
        {
            "row": row,
            "drill": query.url(
                **_group_filter(query, row.filter_value), group_by=drill_to
            ),
            "records": query.url(
                records=True, **_group_filter(query, row.filter_value)
            ),
        }
        for row in result.rows[:EXPLORER_TABLE_ROWS]
    ]
    context = {
        **_form_context(request, form),
        "query": query,
        "result": result,
        "rows": rows,
        "more_rows": len(result.rows) - len(rows),
        "unconverted": [
            (row, query.url(records=True, **_group_filter(query, row.filter_value)))
            for row in result.unconverted
        ],
        "chart": _chart(result),
        "filters": query.describe_filters(),
        "csv_url": f"{reverse('cost_explorer_csv')}?{urlencode(query.params())}",
        "records_url": query.url(records=True),
        "measure_label": MEASURES[query.measure].label,
    }
    return render(request, "billing/cost_explorer.html", context)


def _group_filter(query: ExplorerQuery, value: str) -> dict:
    """The change of filters that narrows a question to one of its groups."""
    if query.tag_key is not None:
        return {"tag": (query.tag_key, None if value == NONE else value)}
    return {query.group_by: value}


@login_required
def cost_explorer_csv(request: HttpRequest) -> HttpResponseBase:
    form = _explorer_form(request)
    if not form.is_valid():
        return HttpResponse(_form_errors(form), status=400, content_type="text/plain")
    query = form.query()
    result = explore(user=request.user, query=query)
    header = [query.group_label, "Filter value", "Amount", "Currency"]
    header += ["Share (%)", "Cost lines", "Note"]
    rows = [
        [row.label, row.filter_value, row.amount, result.currency]
        + [round(row.share, 2) if row.share is not None else "", row.cost_lines, ""]
        for row in result.rows
    ]
    rows += [
        [row.label, row.filter_value, row.amount, row.currency, "", row.cost_lines]
        + ["No FX rate: in the billing currency, not in the total"]
        for row in result.unconverted
    ]
    name = f"costs-{query.start}-{query.end}-by-{slugify(query.group_by)}.csv"
    return csv_response(name, header, rows)


def _form_errors(form: ExplorerForm) -> str:
    return "\n".join(
        f"{name}: {message}" if name != "__all__" else message
        for name, messages in form.errors.items()
        for message in messages
    )


RECORDS_PER_PAGE = 50


@login_required
def cost_records(request: HttpRequest) -> HttpResponse:
    form = _explorer_form(request)
    if not form.is_valid():
        return _refused(request, form, "billing/cost_records.html")
    query = form.query()
    records = (
        records_in_range(request.user, query)
        .select_related("project", "training_run", "source")
        .order_by("charge_period_start", "pk")
    )
    page = Paginator(records, RECORDS_PER_PAGE).get_page(request.GET.get("page"))
    context = {
        "form": form,
        "query": query,
        "page": page,
        "records": [(record, getattr(record, query.measure_field)) for record in page],
        "filters": query.describe_filters(),
        "explorer_url": query.url(),
        "csv_url": f"{reverse('cost_records_csv')}?{urlencode(query.params())}",
        "page_query": urlencode(query.params()),
        "measure_label": MEASURES[query.measure].label,
    }
    return render(request, "billing/cost_records.html", context)


RECORD_COLUMNS = {
    "charge_period_start": "Charge start",
    "charge_period_end": "Charge end",
    "provider_name": "Provider",
    "service_name": "Service",
    "service_category": "Service category",
    "charge_category": "Charge category",
    "region_id": "Region",
    "sub_account_id": "Sub-account",
    "resource_id": "Resource id",
    "resource_name": "Resource name",
    "billing_currency": "Currency",
    "project__slug": "Project",
    "training_run__external_id": "Run",
    "is_provisional": "Provisional",
    "source__name": "Billing source",
    "import_run_id": "Import run",
    "tags": "Tags",
}


@login_required
def cost_records_csv(request: HttpRequest) -> HttpResponseBase:
    """Every record of the filters, streamed: a range may hold millions."""
    form = _explorer_form(request)
    if not form.is_valid():
        return HttpResponse(_form_errors(form), status=400, content_type="text/plain")
    query = form.query()
    records = (
        records_in_range(request.user, query)
        .order_by("charge_period_start", "pk")
        .values_list(*RECORD_COLUMNS, query.measure_field)
        .iterator(chunk_size=2000)
    )
    header = [*RECORD_COLUMNS.values(), MEASURES[query.measure].label]
    rows = (_record_row(values) for values in records)
    return csv_response(f"cost-records-{query.start}-{query.end}.csv", header, rows)


def _record_row(values: tuple) -> list:
    """A record as text a spreadsheet reads: ISO times, yes/no, tags as JSON."""
    row = []
    for value in values:
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, bool):
            value = "yes" if value else "no"
        elif isinstance(value, dict):
            value = json.dumps(value, sort_keys=True) if value else ""
        row.append(value)
    return row
