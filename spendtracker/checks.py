from cryptography.fernet import Fernet
from django.conf import settings
from django.core.checks import Error, Warning, register

from core.crypto import field_keys

MISSING_KEY = (
    "must be set when DJANGO_DEBUG is off: billing-source credentials are "
    "encrypted with it"
)


@register()
def configuration_check(app_configs, **kwargs):
    """Name every environment variable that is missing or could not be parsed."""
    problems = list(settings.CONFIG_ERRORS)
    keys = field_keys(settings.FIELD_ENCRYPTION_KEY)
    if not keys and not settings.DEBUG:
        problems.append(("FIELD_ENCRYPTION_KEY", MISSING_KEY))
    for key in keys:
        try:
            Fernet(key)
        except ValueError:
            problems.append(
                (
                    "FIELD_ENCRYPTION_KEY",
                    "is not a Fernet key (32 url-safe base64 bytes)",
                )
            )
    return [
        Error(f"{name}: {problem}", hint="See .env.example.", id="spendtracker.E001")
        for name, problem in problems
    ]


@register()
def encryption_key_check(app_configs, **kwargs):
    """In development a missing key only stops sources from keeping credentials."""
    if settings.DEBUG and not field_keys(settings.FIELD_ENCRYPTION_KEY):
        return [
            Warning(
                "FIELD_ENCRYPTION_KEY is not set: billing sources cannot store "
                "credentials",
                hint="See .env.example.",
                id="spendtracker.W001",
            )
        ]
    return []
