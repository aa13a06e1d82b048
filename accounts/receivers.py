"""The audit log of logins, from Django's own signals (API tokens are recorded by
their services, projects/tokens.py)."""

from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.dispatch import receiver

from core import audit


@receiver(user_logged_in, dispatch_uid="audit_login")
def login_recorded(sender, request, user, **kwargs) -> None:
    audit.record(
        kind=audit.Kind.LOGIN,
        action="logged in",
        actor=user,
        ip=audit.client_ip(request) if request else None,
    )


@receiver(user_login_failed, dispatch_uid="audit_login_failed")
def login_failure_recorded(sender, credentials, request=None, **kwargs) -> None:
    # `credentials` holds the password too (Django masks it): only the name is kept.
    tried = str(credentials.get("username") or credentials.get("email") or "")
    audit.record(
        kind=audit.Kind.LOGIN,
        action="login failed",
        actor_name=tried[:254] or "(no username)",
        ip=audit.client_ip(request) if request else None,
    )
