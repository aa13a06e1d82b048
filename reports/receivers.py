"""Reports acts on what earlier apps announce."""

from datetime import date

from django.dispatch import receiver

from billing.signals import import_finished
from reports.checks import records_check_queue


@receiver(import_finished, dispatch_uid="reports.records_check_after_import")
def records_check_after_import(sender, run, **kwargs) -> None:
    """An import changed its billing periods' cost records: reconcile those months
    again, so that their reports find a check of the new figures."""
    for period in run.billing_periods:
        records_check_queue(date.fromisoformat(f"{period}-01"))
