from django.conf import settings
from django.http import HttpRequest

from accounts.models import Membership
from accounts.selectors import organisation_name
from budgets.selectors import alert_counts, alerts_visible_to


def portal(request: HttpRequest) -> dict:
    return {
        "reporting_currency": settings.REPORTING_CURRENCY,
        "role_label": _role_label(request.user),
        "open_alert_count": _open_alerts(request.user),
        "organisation_name": organisation_name()
        if request.user.is_authenticated
        else "",
    }


def _open_alerts(user) -> int:
    """Open, not yet acknowledged: what the sidebar counts."""
    if not user.is_authenticated:
        return 0
    return alert_counts(alerts_visible_to(user)).open


def _role_label(user) -> str:
    if not user.is_authenticated:
        return ""
    if user.sees_everything:
        return user.get_role_display()
    leads = Membership.objects.filter(user=user, role=Membership.Role.LEAD).exists()
    return "Team lead" if leads else "Team member"
