from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from core.models import OwedMessage


class MonthClose(models.Model):
    """One close of a month by finance: the report as it stood, kept as files.

    A reopen does not delete the close: it is marked reopened and stays as history,
    with its snapshot. At most one close per month is in force (not reopened).
    """

    month = models.DateField(help_text="The first day of the closed month.")
    closed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    closed_at = models.DateTimeField()
    reason = models.TextField(
        blank=True,
        help_text="Why finance closed the month although a source was not final "
        "(or a note on an ordinary close).",
    )
    forced = models.BooleanField(
        default=False, help_text="Closed while a source had failed or was not final."
    )
    blockers = models.JSONField(
        default=list,
        blank=True,
        help_text="What was not final when the month was closed, in words.",
    )
    carried = models.JSONField(
        default=list,
        blank=True,
        help_text="The adjustments to earlier closed months that this month's report "
        "carried when it was closed (reports.closing).",
    )
    reopened_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        related_name="+",
        null=True,
        blank=True,
    )
    reopened_at = models.DateTimeField(null=True, blank=True)
    reopen_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-month", "-closed_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["month"],
                condition=Q(reopened_at__isnull=True),
                name="one_close_in_force_per_month",
            ),
            models.CheckConstraint(
                condition=Q(month__day=1), name="month_close_on_first_day"
            ),
            models.CheckConstraint(
                condition=Q(forced=False) | ~Q(reason=""),
                name="forced_close_has_a_reason",
            ),
            models.CheckConstraint(
                condition=Q(
                    reopened_at__isnull=True,
                    reopened_by__isnull=True,
                    reopen_reason="",
                )
                | (
                    Q(reopened_at__isnull=False, reopened_by__isnull=False)
                    & ~Q(reopen_reason="")
                ),
                name="reopen_has_who_when_and_a_reason",
            ),
        ]

    def __str__(self) -> str:
        state = "reopened" if self.reopened_at else "closed"
        return f"{self.month:%B %Y} ({state})"

    @property
    def in_force(self) -> bool:
        return self.reopened_at is None


class SnapshotFile(models.Model):
    """One file of a closed month's report, exactly as it was when the month closed.

    The JSON holds the figures the closed month's page shows; the PDF is what its
    download serves. Kept in the database beside the close (a PDF of a month is about
    100 KB), so the snapshot, its checksum and who closed it stand or fall together.
    """

    close = models.ForeignKey(
        MonthClose, on_delete=models.CASCADE, related_name="files"
    )
    format = models.CharField(max_length=10)  # a key of reports.views.EXPORTS
    content = models.BinaryField()
    sha256 = models.CharField("SHA-256", max_length=64)

    class Meta:
        ordering = ["format"]
        constraints = [
            models.UniqueConstraint(
                fields=["close", "format"], name="one_snapshot_file_per_format"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.close}: {self.format}"


class ReportEmail(OwedMessage):
    """The monthly report owed to one finance user: recorded, then claimed by a
    conditional UPDATE when sent (core.delivery), so it goes out once."""

    month = models.DateField(help_text="The first day of the month reported.")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )

    class Meta:
        ordering = ["-month", "user"]
        constraints = [
            models.UniqueConstraint(
                fields=["month", "user"], name="one_report_email_per_month_and_user"
            ),
        ]
        indexes = [
            # The sender's sweep for what is still owed.
            models.Index(fields=["status"], name="report_email_owed"),
        ]

    def __str__(self) -> str:
        return f"{self.month:%B %Y} report → {self.user} ({self.status})"


class RecordsCheck(models.Model):
    """The heavy half of a month's reconciliation, read from the cost records by a
    worker (reports.checks), never in a web request: the month's cost records and
    its rollup, both by measure, billing currency and project, read in one snapshot,
    and the billed total of each invoice of its billing period."""

    month = models.DateField(unique=True, help_text="The first day of the month.")
    requested_at = models.DateTimeField(
        null=True, blank=True, help_text="When a check was last queued."
    )
    checked_at = models.DateTimeField(
        null=True, blank=True, help_text="When the figures below were read."
    )
    records = models.JSONField(default=list, blank=True)
    rollup = models.JSONField(default=list, blank=True)
    billed = models.JSONField(default=list, blank=True)

    def __str__(self) -> str:
        return f"Reconciliation check of {self.month:%B %Y}"


class QueuedWork(models.Model):
    """Work too heavy for a web request, done by a worker while the page that asked
    for it waits (it reloads itself): how it ended, or why it failed.

    Work that no worker has taken further for `GIVEN_UP_AFTER` is given up, and the
    page says so instead of waiting for ever. A subclass has a `Status` with `QUEUED`
    and `FAILED`, and says in `awaited_since` since when its worker has been awaited.
    """

    # Longer than any worker's time limit: by then the work was lost (its worker
    # died, or none runs).
    GIVEN_UP_AFTER = timedelta(minutes=10)

    error = models.TextField(blank=True)
    requested_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True

    def awaited_since(self) -> datetime | None:
        """Since when a worker's next step has been awaited; None once finished."""
        return self.requested_at if self.status == self.Status.QUEUED else None

    @property
    def given_up(self) -> bool:
        since = self.awaited_since()
        return since is not None and timezone.now() - since > self.GIVEN_UP_AFTER

    @property
    def waiting(self) -> bool:
        """Still expected from a worker: its page reloads itself."""
        return self.awaited_since() is not None and not self.given_up

    @contextmanager
    def outcome_recorded(self, *, failure: str, time_limit: str) -> Iterator[None]:
        """Do the worker's part in the block and save how it ended. A failure is
        kept with its reason, so that the waiting page says it instead of waiting;
        an unexpected one is raised again, for the worker's log."""
        try:
            yield
        except SoftTimeLimitExceeded:
            self.status = self.Status.FAILED
            self.error = f"{failure}: it ran past its time limit ({time_limit})."
        except Exception as exc:
            self.status = self.Status.FAILED
            self.error = f"{failure}: {exc}"
            raise
        finally:
            self.finished_at = timezone.now()
            self.save()


class ReportFile(QueuedWork):
    """A report file that a worker draws for one user (reports.files): the PDF of an
    open month, too heavy for a web request. The user's page waits for it."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Being drawn"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    month = models.DateField(help_text="The first day of the month.")
    format = models.CharField(max_length=10)
    status = models.CharField(max_length=10, choices=Status, default=Status.QUEUED)
    content = models.BinaryField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.format} of {self.month:%B %Y} for {self.user}"


class MonthCloseRequest(QueuedWork):
    """Finance asking for a month to be closed, which a worker then does
    (reports.close_requests): who asked, when and why, and how the close ended.

    One request per month is pending (queued or being closed) at a time, so a second
    submit never queues a second close."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Being closed"
        CLOSED = "closed", "Closed"
        FAILED = "failed", "Failed"

    PENDING = (Status.QUEUED, Status.RUNNING)

    month = models.DateField(help_text="The first day of the month to close.")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    reason = models.TextField(
        blank=True, help_text="Given with the request; kept with the close."
    )
    status = models.CharField(max_length=10, choices=Status, default=Status.QUEUED)
    started_at = models.DateTimeField(
        null=True, blank=True, help_text="When a worker took the request up."
    )
    close = models.OneToOneField(
        MonthClose,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="request",
        help_text="The close the worker made.",
    )

    class Meta:
        ordering = ["-requested_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["month"],
                condition=Q(status__in=["queued", "running"]),
                name="one_pending_close_request_per_month",
            ),
            models.CheckConstraint(
                condition=Q(month__day=1), name="close_request_on_first_day"
            ),
        ]
        indexes = [
            # The report's month-close panel: the month's latest request.
            models.Index(
                fields=["month", "-requested_at"], name="close_request_latest"
            ),
        ]

    def __str__(self) -> str:
        return f"Close of {self.month:%B %Y} by {self.requested_by} ({self.status})"

    def awaited_since(self) -> datetime | None:
        """Queued: since it was asked for; being closed: since a worker took it up
        (a worker that ran past its time limit, or died, will not finish it)."""
        if self.status == self.Status.RUNNING:
            return self.started_at
        return super().awaited_since()

    @property
    def given_up_message(self) -> str:
        minutes = int(self.GIVEN_UP_AFTER.total_seconds() // 60)
        if self.status == self.Status.RUNNING:
            return (
                f"The worker closing {self.month:%B %Y} has not finished within "
                f"{minutes} minutes: it may have been stopped. The month is not "
                "closed: ask an admin to check the Celery workers, then close it again."
            )
        return (
            f"No worker took up this close within {minutes} minutes: the task queue "
            "may be down. Ask an admin to check the Celery workers, then close the "
            "month again."
        )
