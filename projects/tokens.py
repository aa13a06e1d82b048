"""API tokens: created and revoked in the portal, shown once, kept as a SHA-256.

A key is `spt_` and 40 random URL-safe characters; its first 12 characters are kept
as they are, to find it and to tell tokens apart on the page. The keys are random, so
a plain SHA-256 is as good as a slow hash, and lets every request check one in
microseconds. Tokens created before (Django REST framework's, kept in clear) were
turned into these by migration `projects.0005`.
"""

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Q
from django.utils import timezone

from accounts.models import User
from accounts.permissions import user_can_edit_plan
from core import audit
from projects.models import ApiToken, Project

PREFIX_CHARS = 12
# last_used_at is written at most this often per token, not on every request.
USE_RECORDED_EVERY = timedelta(minutes=1)
EXPIRY_DAYS = (7, 30, 90, 365)


class TokenInvalid(Exception):
    """Why a key was refused, in a sentence for the 401."""


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def api_token_create(
    *,
    user: User,
    name: str,
    expires_in_days: int,
    project: Project | None = None,
) -> tuple[ApiToken, str]:
    """A new token and its key, which is never shown again. With `project`, a run
    reporter's token of that project: only its plan editors (its team's leads and
    admins) make one."""
    if expires_in_days not in EXPIRY_DAYS:
        raise ValidationError(
            {"expires_in_days": "Choose one of the offered expiries."}
        )
    if project is not None and not user_can_edit_plan(user, project):
        raise PermissionDenied("Only the team's leads make run reporters' tokens.")
    key = f"spt_{secrets.token_urlsafe(30)}"
    token = ApiToken.objects.create(
        user=user,
        name=name.strip(),
        kind=ApiToken.Kind.RUN_REPORTER if project else ApiToken.Kind.PERSONAL,
        project=project,
        prefix=key[:PREFIX_CHARS],
        key_hash=key_hash(key),
        expires_at=timezone.now() + timedelta(days=expires_in_days),
    )
    audit.record(
        kind=audit.Kind.TOKEN,
        action="API token created",
        target=token,
        actor=user,
        details={"kind": token.kind} | ({"project": project.slug} if project else {}),
    )
    return token, key


def api_token_revoke(*, token: ApiToken, by: User) -> None:
    if token.user_id != by.pk and not by.is_admin:
        raise PermissionDenied("Only its owner or an admin revokes a token.")
    revoked = ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    if revoked:
        audit.record(
            kind=audit.Kind.TOKEN, action="API token revoked", target=token, actor=by
        )


def api_token_check(key: str, *, now: datetime | None = None) -> ApiToken:
    """The live token of this key, its use recorded; TokenInvalid saying why not."""
    now = now or timezone.now()
    token = (
        ApiToken.objects.select_related("user", "project")
        .filter(prefix=key[:PREFIX_CHARS])
        .first()
    )
    if token is None or not hmac.compare_digest(token.key_hash, key_hash(key)):
        raise TokenInvalid("Invalid token.")
    if token.revoked_at is not None:
        raise TokenInvalid(f"The token “{token.name}” was revoked.")
    if token.expires_at <= now:
        raise TokenInvalid(
            f"The token “{token.name}” expired on {token.expires_at:%Y-%m-%d}."
        )
    if not token.user.is_active:
        raise TokenInvalid("The token's user is deactivated.")
    ApiToken.objects.filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - USE_RECORDED_EVERY),
        pk=token.pk,
    ).update(last_used_at=now)
    return token
