"""Budgets acts on what earlier apps announce."""

from django.dispatch import receiver

from billing.signals import import_finished
from budgets.tasks import alerts_evaluate_task


@receiver(import_finished, dispatch_uid="budgets.alerts_after_import")
def alerts_evaluate_after_import(sender, **kwargs) -> None:
    """New cost data may cross a threshold: evaluate the alerts on it."""
    alerts_evaluate_task.delay()
