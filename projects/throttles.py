from accounts.throttles import UserRateThrottle
from projects.models import ApiToken


class ApiRateThrottle(UserRateThrottle):
    """API_RATE requests per token, each token counting on its own (a runaway
    script spends its own allowance, not its owner's other tokens'), or per user
    for the portal's own calls with a session."""

    def get_cache_key(self, request, view) -> str | None:
        if isinstance(request.auth, ApiToken):
            ident = f"token-{request.auth.pk}"
            return self.cache_format % {"scope": self.scope, "ident": ident}
        return super().get_cache_key(request, view)
