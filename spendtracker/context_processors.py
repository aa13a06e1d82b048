from django.conf import settings
from django.http import HttpRequest


def portal(request: HttpRequest) -> dict:
    return {"reporting_currency": settings.REPORTING_CURRENCY}
