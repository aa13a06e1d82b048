"""The audit log: `record` writes who did what, from the service that does it.

Who is the user the service acts for when it knows one, else the user of the request
being served (set by `AuditMiddleware`, so a service called from the portal or the
admin needs no extra argument), else nobody: the system, a worker or a command.
"""

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from django.db.models import Model
from django.http import HttpRequest, HttpResponse

from core.models import AuditEvent

Kind = AuditEvent.Kind


# The request being served: who is asking, and from where.
_request: ContextVar[HttpRequest | None] = ContextVar("audit_request", default=None)


def client_ip(request: HttpRequest) -> str | None:
    """The peer's address. Behind a proxy this is the proxy's: trusting
    X-Forwarded-For would let anyone write any address into the log."""
    return request.META.get("REMOTE_ADDR") or None


class AuditMiddleware:
    """Makes the request's user and address those of what its services record."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        token = _request.set(request)
        try:
            return self.get_response(request)
        finally:
            _request.reset(token)


def _request_user(request: HttpRequest) -> Any:
    """The signed-in user, read when an event is recorded: by then DRF has put the
    token's user on the request, and a request that records nothing reads no
    session."""
    user = getattr(request, "user", None)
    return user if user is not None and user.is_authenticated else None


def record(
    *,
    kind: str,
    action: str,
    target: Model | None = None,
    details: dict | None = None,
    actor: Any = None,
    actor_name: str = "",
    ip: str | None = None,
) -> AuditEvent:
    """Write one event. `details` must be JSON-safe and never hold a secret: name
    what changed, never its value."""
    request = _request.get()
    if actor is None and request is not None:
        actor = _request_user(request)
    if ip is None and request is not None:
        ip = client_ip(request)
    return AuditEvent.objects.create(
        actor=actor,
        actor_name=actor_name or (actor.get_username() if actor else ""),
        kind=kind,
        action=action,
        target_type=target._meta.label_lower if target is not None else "",
        target_id=str(target.pk) if target is not None else "",
        target_name=str(target)[:300] if target is not None else "",
        details=details or {},
        ip=ip,
    )
