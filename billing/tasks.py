from datetime import timedelta

from celery import shared_task
from django.utils import timezone

from billing.services import daily_costs_rebuild

RECENT_DAYS = 45


@shared_task
def daily_costs_rebuild_recent() -> int:
    """Rebuild the rollup of the last weeks: the open and the previous billing month."""
    today = timezone.now().date()
    return daily_costs_rebuild(
        start=today - timedelta(days=RECENT_DAYS), end=today + timedelta(days=1)
    )
