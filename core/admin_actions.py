from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from core import delivery


@admin.action(description="Retry the selected given-up emails")
def retry_given_up(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet
) -> None:
    """Owed again from now (core.delivery.retry); those not given up are left alone."""
    count = delivery.retry(queryset)
    modeladmin.message_user(
        request,
        f"{count} given-up email{'s' * (count != 1)} owed again: "
        "the next sweep sends them.",
        messages.SUCCESS,
    )
