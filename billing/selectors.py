"""Reads of billing data, scoped to the user by the permission rules."""

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404

from accounts.models import User
from accounts.permissions import visible_to
from billing.models import ComputeInvoice


def invoices_visible_to(user: User) -> QuerySet[ComputeInvoice]:
    return visible_to(user, ComputeInvoice.objects.all(), team="project__team")


def invoice_get_for_user(user: User, pk: int) -> ComputeInvoice:
    return get_object_or_404(
        invoices_visible_to(user).select_related("project", "training_run"), pk=pk
    )
