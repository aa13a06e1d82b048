from django.conf import settings
from django.db import models
from django.utils import timezone

from core import delivery

# The heartbeat the beat schedule writes every minute.
BEAT = "beat"


class Heartbeat(models.Model):
    """The last time something periodic ran, by name: `beat` is written every minute
    by a task the beat schedule sends (core.tasks.beat_heartbeat), so its age says
    whether beat and a worker are alive (/healthz)."""

    name = models.CharField(max_length=50, unique=True)
    beat_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name} {self.beat_at:%Y-%m-%d %H:%M:%S}"


class UnsentTask(models.Model):
    """A task that a committed change queued while the broker was down: kept here
    until `core.tasks.unsent_tasks_send` (every five minutes) hands it to the queue.
    Only tasks whose rerun is safe are queued this way."""

    task = models.CharField(max_length=200)
    args = models.JSONField(default=list)
    queued_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["pk"]

    def __str__(self) -> str:
        return f"{self.task}{tuple(self.args)!r} at {self.queued_at:%Y-%m-%d %H:%M}"


class AuditEvent(models.Model):
    """Who did what, and when: one row per change worth answering for. Written by
    `core.audit.record` only and never changed afterwards (the admin shows it
    read-only); secrets never go into `details`, only the names of what changed."""

    class Kind(models.TextChoices):
        BUDGET = "budget", "Budgets and plans"
        ALLOCATION_RULE = "allocation_rule", "Allocation rules"
        SOURCE = "source", "Billing sources"
        IMPORT = "import", "Uploads and imports"
        MONTH = "month", "Month close"
        TOKEN = "token", "API tokens"
        WEBHOOK = "webhook", "Alert webhooks"
        LOGIN = "login", "Logins"

    at = models.DateTimeField(default=timezone.now)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    actor_name = models.CharField(
        max_length=254,
        blank=True,
        help_text="Who, as named then (kept if the user goes); for a failed login, "
        "the username tried. Empty: the system (a worker or a command).",
    )
    kind = models.CharField(max_length=20, choices=Kind)
    action = models.CharField(max_length=60)
    target_type = models.CharField(max_length=100, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_name = models.CharField(max_length=300, blank=True)
    details = models.JSONField(default=dict, blank=True)
    ip = models.GenericIPAddressField("IP address", null=True, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [
            # The audit page: newest first, all kinds or one.
            models.Index(fields=["at"], name="audit_at"),
            models.Index(fields=["kind", "at"], name="audit_kind_at"),
        ]

    def __str__(self) -> str:
        who = self.actor_name or "system"
        return f"{self.at:%Y-%m-%d %H:%M} {who}: {self.action} {self.target_name}"


class OwedMessage(models.Model):
    """A message owed to one recipient (an alert email, a report email, a webhook
    post): recorded before anything is sent, then claimed, sent and settled by
    core.delivery, so it goes out once."""

    class Status(models.TextChoices):
        PENDING = delivery.PENDING, "Pending"
        SENDING = delivery.SENDING, "Sending"
        SENT = delivery.SENT, "Sent"
        GIVEN_UP = delivery.GIVEN_UP, "Given up"

    status = models.CharField(max_length=10, choices=Status, default=Status.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)
    owed_since = models.DateTimeField(
        default=timezone.now,
        help_text="When it became owed, or was retried: it is given up by this age.",
    )
    claimed_at = models.DateTimeField(null=True, blank=True)
    claim = models.UUIDField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    refusals = models.PositiveSmallIntegerField(
        default=0, help_text="Times the receiving server refused the message itself."
    )
    last_error = models.CharField(max_length=500, blank=True)
    given_up_reason = models.CharField(max_length=600, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True
