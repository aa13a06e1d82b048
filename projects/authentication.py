"""The API's token authentication and what a run reporter's token may reach."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import BasePermission

from projects.models import ApiToken
from projects.tokens import TokenInvalid, api_token_check

# `Token` is what Django REST framework's tokens were sent with, before these.
KEYWORDS = (b"bearer", b"token")


class ApiTokenAuthentication(BaseAuthentication):
    """`Authorization: Bearer <key>`; a wrong, expired or revoked key gets 401."""

    def authenticate(self, request):
        header = get_authorization_header(request).split()
        if not header or header[0].lower() not in KEYWORDS:
            return None
        if len(header) != 2:
            raise AuthenticationFailed(
                "Send the header as “Authorization: Bearer <token>”."
            )
        try:
            token = api_token_check(header[1].decode("latin-1"))
        except TokenInvalid as invalid:
            raise AuthenticationFailed(str(invalid)) from None
        return token.user, token

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="api"'


class ApiTokenScheme(OpenApiAuthenticationExtension):
    """The tokens in the OpenAPI schema (drf-spectacular warns, and check --deploy
    with it, of an authentication class it cannot describe)."""

    target_class = ApiTokenAuthentication
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer"}


class TokenScope(BasePermission):
    """A run reporter's token reaches only the views that take one (posting run
    events), and those check its project."""

    message = "A run reporter's token may only post the events of its project's runs."

    def has_permission(self, request, view) -> bool:
        token = request.auth
        if isinstance(token, ApiToken) and token.kind == ApiToken.Kind.RUN_REPORTER:
            return (
                getattr(view, "run_reporters_may", False) and request.method == "POST"
            )
        return True
