from datetime import date

from celery import shared_task
from django.utils import timezone

from core.tasks import RerunSafeTask
from reports.checks import records_check_run
from reports.close_requests import month_close_run
from reports.files import report_file_render
from reports.notifications import monthly_report_email_run, report_emails_send


@shared_task(base=RerunSafeTask)
def monthly_report_email_task() -> int:
    """The previous month's report to finance. Safe to run twice at once: one email
    row per month and user (a constraint), each claimed before it is sent."""
    return monthly_report_email_run(today=timezone.now().date())


@shared_task(base=RerunSafeTask)
def report_emails_send_task() -> int:
    """Send monthly report emails still owed; each is claimed by one worker."""
    return report_emails_send()


@shared_task(base=RerunSafeTask)
def records_check_task(month: str) -> str:
    """Reconcile a month (YYYY-MM-DD, its first day) with its cost records."""
    check = records_check_run(date.fromisoformat(month))
    return f"{check.month:%Y-%m} checked at {check.checked_at:%H:%M:%S}"


@shared_task(soft_time_limit=300, time_limit=360)
def report_file_render_task(file_id: int) -> str:
    """Draw a report file a user asked for (a month's PDF)."""
    file = report_file_render(file_id)
    return f"{file} {file.status}"


@shared_task(soft_time_limit=300, time_limit=360)
def month_close_task(request_id: int) -> str:
    """Close the month of a close request: store its report's five files."""
    request = month_close_run(request_id)
    return f"{request}{': ' + request.error if request.error else ''}"
