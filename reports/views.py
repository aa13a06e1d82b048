from datetime import date, timedelta

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone

from accounts.permissions import require_organisation_view
from accounts.selectors import teams_visible_to
from billing.models import BillingSource
from budgets import selectors
from core.dates import month_start, next_month
from reports import charts
from reports.selectors import team_totals
from reports.services import monthly_report, percent, report_months


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


def _report_scope(user) -> dict:
    return {"teams": teams_visible_to(user), "whole_organisation": user.sees_everything}


def _month_or_404(month: date) -> date:
    if month > timezone.now().date():
        raise Http404("That month has not begun.")
    return month


@login_required
def report_list(request: HttpRequest) -> HttpResponse:
    months = report_months(**_report_scope(request.user))
    for row in months:
        row["variance"] = row["actual"] - row["plan"]
        row["provisional_percent"] = percent(row["provisional"], row["actual"])
    return render(request, "reports/report_list.html", {"months": months})


@login_required
def report_detail(request: HttpRequest, month: date) -> HttpResponse:
    report = monthly_report(month=_month_or_404(month), **_report_scope(request.user))
    currency = report.currency
    context = {
        "report": report,
        "team_chart": charts.plan_actual_bars(
            "Plan vs actual by team",
            [charts.Pair(t.team.name, t.plan, t.actual) for t in report.teams],
            currency,
        ),
        "trend_chart": charts.trend_lines(
            "Plan vs actual, last 12 months",
            [charts.Pair(f"{m.month:%b %y}", m.plan, m.actual) for m in report.trend],
            currency,
        ),
        "next_month": next_month(report.month)
        if next_month(report.month) <= timezone.now().date()
        else None,
    }
    return render(request, "reports/report_detail.html", context)


@login_required
def report_json(request: HttpRequest, month: date) -> JsonResponse:
    report = monthly_report(month=_month_or_404(month), **_report_scope(request.user))
    return JsonResponse(report.as_json())
