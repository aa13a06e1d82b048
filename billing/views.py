from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.db.models import Count, Sum
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse

from accounts.permissions import require_billing_operator
from billing.forms import UploadForm
from billing.models import BillingSource, ComputeInvoice, ImportRun
from billing.selectors import invoice_get_for_user, invoices_visible_to
from billing.services import billing_upload_accept, import_progress


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
        {"invoice": invoice, "lines": invoice.lines.all()},
    )


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
            "credentials": source.masked_credentials
            if source.credentials_token
            else {},
        },
    )


@login_required
def import_list(request: HttpRequest) -> HttpResponse:
    require_billing_operator(request.user)
    runs = ImportRun.objects.select_related("source")[:200]
    return render(request, "billing/import_list.html", {"runs": runs})


@login_required
def import_detail(request: HttpRequest, pk: int) -> HttpResponse:
    require_billing_operator(request.user)
    run = get_object_or_404(ImportRun.objects.select_related("source"), pk=pk)
    return render(
        request,
        "billing/import_detail.html",
        {"run": run, "progress": import_progress(run)},
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
    form = UploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST":
        if not form.is_valid():
            return JsonResponse({"errors": form.errors}, status=400)
        with transaction.atomic():
            run = billing_upload_accept(
                uploaded=form.cleaned_data["file"],
                source_name=form.cleaned_data["source"],
                file_format=form.cleaned_data["file_format"],
            )
        return JsonResponse(
            {"run": run.pk, "status_url": reverse("import_status", args=[run.pk])},
            status=202,
        )
    return render(
        request,
        "billing/upload.html",
        {
            "form": form,
            "source_names": BillingSource.objects.values_list("name", flat=True),
        },
    )
