from celery import shared_task

from budgets.alerts import alerts_evaluate
from budgets.notifications import digests_send, notifications_send_pending
from budgets.telemetry import run_estimates_restate, runs_reached_by_import
from budgets.webhooks import webhooks_send_pending
from core.tasks import RerunSafeTask


@shared_task(base=RerunSafeTask)
def alerts_evaluate_task() -> dict[str, int]:
    """Safe to run twice at once: the alerts' unique constraints decide who fires."""
    return alerts_evaluate().as_json()


@shared_task(base=RerunSafeTask)
def notifications_send() -> int:
    """Send owed alert emails; each is claimed by one worker, so duplicates are safe."""
    return notifications_send_pending()


@shared_task(base=RerunSafeTask)
def digests_send_task() -> int:
    return digests_send()


@shared_task(base=RerunSafeTask)
def run_estimates_restate_task(run_id: int) -> int:
    """A run's estimate lines after its events; rewriting them twice is the same."""
    return run_estimates_restate(run_id=run_id)


@shared_task(base=RerunSafeTask)
def run_estimates_restate_after_import(import_run_id: int) -> int:
    """Billing data of an import may cover days the runs it reaches had estimated:
    restate those runs; how many."""
    runs = runs_reached_by_import(import_run_id)
    for run_id in runs:
        run_estimates_restate(run_id=run_id)
    return len(runs)


@shared_task(base=RerunSafeTask)
def webhooks_send() -> int:
    """Send owed webhook messages; each is claimed by one worker."""
    return webhooks_send_pending()
