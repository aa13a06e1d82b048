"""Report files too heavy for a web request, drawn by a worker for one user.

A month's PDF takes seconds of CPU (WeasyPrint: about 0.2 s a page, 30 pages for 200
projects). Its download queues a `ReportFile` and answers at once with a page that
waits for it; the worker draws the report as the user may see it and stores the file.
A closed month's files are its snapshot and are served as they are.
"""

from datetime import date

from accounts.models import User
from accounts.selectors import teams_visible_to
from core.tasks import enqueue_after_commit
from reports import exports
from reports.closing import open_report
from reports.models import ReportFile

# Drawn by a worker: the format and its renderer.
RENDERERS = {"pdf": exports.render_pdf}


def report_file_request(*, user: User, month: date, fmt: str) -> ReportFile:
    """Queue the drawing of `month`'s report as `fmt` for `user`."""
    from reports.tasks import report_file_render_task  # tasks import this module

    # One file per user, month and format: the new one replaces those drawn before.
    ReportFile.objects.filter(user=user, month=month, format=fmt).delete()
    file = ReportFile.objects.create(user=user, month=month, format=fmt)
    enqueue_after_commit(report_file_render_task, file.pk)
    return file


def report_file_render(file_id: int) -> ReportFile:
    """Draw a queued file (the worker's task). A failure is kept on the file, with
    its reason, so that the user's page says it instead of waiting."""
    file = ReportFile.objects.select_related("user").get(pk=file_id)
    if file.status != ReportFile.Status.QUEUED:
        return file  # drawn already: a task delivered twice
    user = file.user
    failure = "The report could not be drawn"
    with file.outcome_recorded(failure=failure, time_limit="5 minutes"):
        report = open_report(
            month=file.month,
            teams=teams_visible_to(user),
            whole_organisation=user.sees_everything,
        )
        file.content = RENDERERS[file.format](report)
        file.status = ReportFile.Status.READY
    return file
