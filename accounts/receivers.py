"""The audit log of logins and API tokens, from Django's and DRF's own signals: a
token is created or revoked wherever that happens (the admin, the shell, a command)."""

from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from rest_framework.authtoken.models import Token, TokenProxy

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


# The admin saves and deletes tokens through DRF's proxy model: its own sender.
@receiver(post_save, sender=Token, dispatch_uid="audit_token_created")
@receiver(post_save, sender=TokenProxy, dispatch_uid="audit_token_proxy_created")
def token_creation_recorded(sender, instance: Token, created: bool, **kwargs) -> None:
    if created:
        audit.record(
            kind=audit.Kind.TOKEN, action="API token created", target=instance.user
        )


@receiver(post_delete, sender=Token, dispatch_uid="audit_token_revoked")
@receiver(post_delete, sender=TokenProxy, dispatch_uid="audit_token_proxy_revoked")
def token_revocation_recorded(sender, instance: Token, **kwargs) -> None:
    audit.record(
        kind=audit.Kind.TOKEN, action="API token revoked", target=instance.user
    )
