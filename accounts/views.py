from datetime import timedelta

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from accounts.permissions import team_get_for_user, teams_visible_to
from budgets import selectors
from budgets.services import project_summary


@login_required
def team_list(request: HttpRequest) -> HttpResponse:
    teams = teams_visible_to(request.user).prefetch_related("projects")
    return render(request, "accounts/team_list.html", {"teams": teams})


@login_required
def team_detail(request: HttpRequest, slug: str) -> HttpResponse:
    team = team_get_for_user(request.user, slug)
    today = timezone.now().date()
    summaries = [
        project_summary(project=project, as_of=today)
        for project in team.projects.select_related("budget", "owner")
    ]
    with_budget = [s for s in summaries if s.variance]
    context = {
        "team": team,
        "summaries": summaries,
        "memberships": team.memberships.select_related("user").order_by("role"),
        "budget_total": sum(s.variance.total for s in with_budget),
        "plan_to_date": sum(s.variance.plan_to_date for s in with_budget),
        "actual_to_date": sum(s.variance.actual_to_date for s in with_budget),
        "last_30_days": selectors.actual_between(
            start=today - timedelta(days=29), project__team=team
        ),
    }
    return render(request, "accounts/team_detail.html", context)
