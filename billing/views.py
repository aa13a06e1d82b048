from django.contrib.auth.decorators import login_required
from django.db.models import Sum
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from accounts.permissions import invoice_get_for_user, invoices_visible_to
from billing.models import ComputeInvoice


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
