"""Request throttles beyond the API's: who a request comes from, and password resets.

The API's throttles are Django REST framework's own (REST_FRAMEWORK in settings); login
throttling is django-axes (AXES_* in settings). Both, and the password reset limit here,
count a request against the same address: `client_address`.
"""

import hashlib
import logging

from django.conf import settings
from django.http import HttpRequest
from rest_framework import throttling
from rest_framework.throttling import BaseThrottle, SimpleRateThrottle

logger = logging.getLogger(__name__)


def client_address(request: HttpRequest) -> str:
    """The address a request came from: REMOTE_ADDR, or behind the TLS proxy
    (DJANGO_BEHIND_TLS_PROXY) the last address of X-Forwarded-For, which the proxy
    appended; the ones before it are whatever the client claimed."""
    return BaseThrottle().get_ident(request)


class CacheDownAllows(SimpleRateThrottle):
    """A throttle counts in the cache (Redis beside a Redis broker); with the cache
    down it lets the request through, like the portal's other best-effort uses of the
    cache, rather than answer 500."""

    def allow_request(self, request, view) -> bool:
        try:
            return super().allow_request(request, view)
        except Exception:
            logger.warning(
                "the cache is down: %s requests are not throttled", self.scope
            )
            return True


class UserRateThrottle(CacheDownAllows, throttling.UserRateThrottle):
    """The API's throttle: API_RATE requests per user (REST_FRAMEWORK in settings)."""


class PasswordResetThrottle(CacheDownAllows):
    """PASSWORD_RESET_RATE password reset requests for one key: an address, or an
    email (hashed, so that no address is kept in the cache)."""

    scope = "password_reset"

    def __init__(self, kind: str, value: str) -> None:
        self.ident = f"{kind}:{hashlib.sha256(value.encode()).hexdigest()}"
        super().__init__()

    def get_rate(self) -> str:
        return settings.PASSWORD_RESET_RATE

    def get_cache_key(self, request, view) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.ident}


def password_reset_wait(request: HttpRequest, email: str) -> float | None:
    """Seconds until another password reset may be asked for from this address or for
    this email, or None when one may be now (and it is counted)."""
    throttles = [
        PasswordResetThrottle("address", client_address(request)),
        PasswordResetThrottle("email", email.strip().lower()),
    ]
    refused = [t for t in throttles if not t.allow_request(request, None)]
    if not refused:
        return None
    return max(t.wait() or 0 for t in refused)
