from celery import shared_task

from budgets.alerts import alerts_evaluate
from budgets.notifications import digests_send, notifications_send_pending
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
