from collections import defaultdict
from datetime import timedelta

from django.contrib.auth.decorators import login_required
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from accounts.models import Team
from accounts.permissions import require_organisation_view
from billing.models import BillingSource
from budgets import selectors
from budgets.alerts import ACTIVE
from budgets.models import Alert
from budgets.services import project_summaries, team_variance
from core.dates import month_start
from projects.models import Project


@login_required
def organisation_overview(request: HttpRequest) -> HttpResponse:
    require_organisation_view(request.user)
    today = timezone.now().date()
    this_month = month_start(today)
    tomorrow = today + timedelta(days=1)
    teams = []
    projects = list(Project.objects.select_related("team"))
    by_team = defaultdict(list)
    for summary in project_summaries(projects=projects, as_of=today):
        by_team[summary.project.team_id].append(summary)
    alerts = dict(
        Alert.objects.filter(status__in=ACTIVE, project__isnull=False)
        .values_list("project__team")
        .annotate(count=Count("id"))
        .order_by()
    )
    for team in Team.objects.all():
        summaries = by_team[team.pk]
        totals = team_variance(summaries)
        teams.append(
            {
                "team": team,
                "projects": len(summaries),
                "at_risk": totals.at_risk,
                "over": totals.over,
                "budget": totals.budget,
                "plan_to_date": totals.plan_to_date,
                "actual_to_date": totals.actual_to_date,
                "forecast": totals.forecast,
                "month_actual": sum(s.month_actual for s in summaries),
                "alerts": alerts.get(team.pk, 0),
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
