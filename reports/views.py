from datetime import timedelta

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from accounts.models import Team
from accounts.permissions import require_organisation_view
from billing.models import BillingSource
from budgets import selectors
from budgets.services import month_start, project_summary


@login_required
def organisation_overview(request: HttpRequest) -> HttpResponse:
    require_organisation_view(request.user)
    today = timezone.now().date()
    this_month = month_start(today)
    tomorrow = today + timedelta(days=1)
    teams = []
    for team in Team.objects.prefetch_related("projects__budget"):
        summaries = [
            project_summary(project=p, as_of=today) for p in team.projects.all()
        ]
        with_budget = [s for s in summaries if s.variance]
        teams.append(
            {
                "team": team,
                "projects": len(summaries),
                "at_risk": sum(1 for s in summaries if s.status == "at_risk"),
                "over": sum(1 for s in summaries if s.status == "over"),
                "budget": sum(s.variance.total for s in with_budget),
                "plan_to_date": sum(s.variance.plan_to_date for s in with_budget),
                "actual_to_date": sum(s.variance.actual_to_date for s in with_budget),
                "month_actual": sum(s.month_actual for s in summaries),
            }
        )
    context = {
        "teams": teams,
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
