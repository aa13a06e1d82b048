from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from accounts.forms import NotificationSettingsForm
from accounts.selectors import teams_visible_to


@login_required
def team_list(request: HttpRequest) -> HttpResponse:
    teams = teams_visible_to(request.user).prefetch_related("projects")
    return render(request, "accounts/team_list.html", {"teams": teams})


@login_required
def notification_settings(request: HttpRequest) -> HttpResponse:
    form = NotificationSettingsForm(request.POST or None, instance=request.user)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, "Alert settings saved.")
        return redirect("notification_settings")
    return render(request, "accounts/notification_settings.html", {"form": form})
