"""The audit log: `record` writes who did what, from the service that does it.

Who is the user the service acts for when it knows one, else the user of the request
being served (set by `AuditMiddleware`, so a service called from the portal or the
admin needs no extra argument), else nobody: the system, a worker or a command.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from django.db.models import Model
from django.http import HttpRequest, HttpResponse

from core.models import AuditEvent

Kind = AuditEvent.Kind


@dataclass(frozen=True)
class Origin:
    """Who is asking, and from where: the request a change comes from."""

    user: Any  # accounts.User, or AnonymousUser; core imports no other app
    ip: str | None


_origin: ContextVar[Origin | None] = ContextVar("audit_origin", default=None)


def client_ip(request: HttpRequest) -> str | None:
    """The peer's address. Behind a proxy this is the proxy's: trusting
    X-Forwarded-For would let anyone write any address into the log."""
    return request.META.get("REMOTE_ADDR") or None


@contextmanager
def acting(origin: Origin) -> Iterator[None]:
    token = _origin.set(origin)
    try:
        yield
    finally:
        _origin.reset(token)


class AuditMiddleware:
    """Makes the request's user and address those of what its services record."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        # request.user stays lazy: a request that records nothing reads no session.
        with acting(Origin(user=request.user, ip=client_ip(request))):
            return self.get_response(request)


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
    origin = _origin.get()
    if actor is None and origin is not None and origin.user.is_authenticated:
        actor = origin.user
    if ip is None and origin is not None:
        ip = origin.ip
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
