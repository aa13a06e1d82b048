from django.conf import settings
from django.core.checks import Error, register


@register()
def configuration_check(app_configs, **kwargs):
    """Name every environment variable that is missing or could not be parsed."""
    return [
        Error(f"{name}: {problem}", hint="See .env.example.", id="spendtracker.E001")
        for name, problem in settings.CONFIG_ERRORS
    ]
