from datetime import timedelta

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from accounts.permissions import require_organisation_view
from billing.models import BillingSource
from budgets import selectors
from core.dates import month_start
from reports.selectors import team_totals


@login_required
def organisation_overview(request: HttpRequest) -> HttpResponse:
    require_organisation_view(request.user)
    today = timezone.now().date()
    this_month = month_start(today)
    tomorrow = today + timedelta(days=1)
    context = {
        "teams": team_totals(as_of=today),
        "month_total": selectors.actual_between(start=this_month, end=tomorrow),
        "month_provisional": selectors.provisional_between(
            measure="effective_cost", start=this_month, end=tomorrow
        ),
        "month_unallocated": selectors.actual_between(
            start=this_month, end=tomorrow, project__isnull=True
        ),
        "unallocated_by_service": selectors.spend_breakdown(
            measure="effective_cost",
            group_by="service_name",
            project__isnull=True,
            date__gte=this_month,
        ),
        "by_provider": selectors.spend_breakdown(
            measure="effective_cost", group_by="provider_name", date__gte=this_month
        ),
        "unconverted": selectors.unconverted_totals(),
        "sources": BillingSource.objects.all(),
        "this_month": this_month,
    }
    return render(request, "reports/overview.html", context)
