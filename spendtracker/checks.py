from cryptography.fernet import Fernet
from django.conf import settings
from django.core.checks import Error, register

from core.crypto import field_keys


@register()
def configuration_check(app_configs, **kwargs):
    """Name every environment variable that is missing or could not be parsed."""
    problems = list(settings.CONFIG_ERRORS)
    for key in field_keys(settings.FIELD_ENCRYPTION_KEY):
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
