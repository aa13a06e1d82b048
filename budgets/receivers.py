"""Budgets acts on what earlier apps announce."""

from django.dispatch import receiver

from billing.signals import import_finished
from budgets.models import RunEvent
from budgets.tasks import alerts_evaluate_task, run_estimates_restate_after_import


@receiver(import_finished, dispatch_uid="budgets.alerts_after_import")
def alerts_evaluate_after_import(sender, **kwargs) -> None:
    """New cost data may cross a threshold: evaluate the alerts on it."""
    alerts_evaluate_task.delay()


@receiver(import_finished, dispatch_uid="budgets.estimates_after_import")
def run_estimates_restate_after_import_queue(sender, run, **kwargs) -> None:
    """Billed days replace the estimates of the runs that report telemetry."""
    if RunEvent.objects.exists():
        run_estimates_restate_after_import.delay(run.pk)
