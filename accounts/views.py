import math

from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from accounts.forms import AuditFilterForm, NotificationSettingsForm
from accounts.permissions import require_audit_reader
from accounts.selectors import teams_visible_to
from accounts.throttles import password_reset_wait

AUDIT_EVENTS_PER_PAGE = 50


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


@login_required
def audit_log(request: HttpRequest) -> HttpResponse:
    require_audit_reader(request.user)
    form = AuditFilterForm(request.GET or None)
    page = Paginator(form.events(), AUDIT_EVENTS_PER_PAGE).get_page(
        request.GET.get("page")
    )
    filters = request.GET.copy()
    filters.pop("page", None)
    context = {"form": form, "page": page, "filters": filters.urlencode()}
    return render(request, "accounts/audit_log.html", context)


class PasswordResetView(auth_views.PasswordResetView):
    """Django's password reset, refused (429) beyond PASSWORD_RESET_RATE requests from
    one address or for one email, so that nobody floods an inbox or the mail server."""

    def form_valid(self, form):
        wait = password_reset_wait(self.request, form.cleaned_data["email"])
        if wait is None:
            return super().form_valid(form)
        minutes = max(1, math.ceil(wait / 60))
        form.add_error(
            None,
            "Too many password reset requests from this address or for this email. "
            f"Try again in {minutes} minute{'s' if minutes != 1 else ''}; a link "
            "already sent stays valid.",
        )
        return self.render_to_response(self.get_context_data(form=form), status=429)
