from django.conf import settings
from django.http import HttpRequest

from accounts.models import Membership


def portal(request: HttpRequest) -> dict:
    return {
        "reporting_currency": settings.REPORTING_CURRENCY,
        "role_label": _role_label(request.user),
    }


def _role_label(user) -> str:
    if not user.is_authenticated:
        return ""
    if user.sees_everything:
        return user.get_role_display()
    leads = Membership.objects.filter(user=user, role=Membership.Role.LEAD).exists()
    return "Team lead" if leads else "Team member"
