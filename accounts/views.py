from datetime import timedelta

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone

from accounts.forms import NotificationSettingsForm
from accounts.permissions import team_get_for_user, teams_visible_to
from budgets import selectors
from budgets.services import project_summaries, team_variance


@login_required
def team_list(request: HttpRequest) -> HttpResponse:
    teams = teams_visible_to(request.user).prefetch_related("projects")
    return render(request, "accounts/team_list.html", {"teams": teams})


@login_required
def team_detail(request: HttpRequest, slug: str) -> HttpResponse:
    team = team_get_for_user(request.user, slug)
    today = timezone.now().date()
    summaries = project_summaries(
        projects=team.projects.select_related("owner"), as_of=today
    )
    context = {
        "team": team,
        "summaries": summaries,
        "totals": team_variance(summaries),
        "memberships": team.memberships.select_related("user").order_by("role"),
        "last_30_days": selectors.actual_between(
            start=today - timedelta(days=29), project__team=team
        ),
    }
    return render(request, "accounts/team_detail.html", context)


@login_required
def notification_settings(request: HttpRequest) -> HttpResponse:
    form = NotificationSettingsForm(request.POST or None, instance=request.user)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, "Alert settings saved.")
        return redirect("notification_settings")
    return render(request, "accounts/notification_settings.html", {"form": form})
