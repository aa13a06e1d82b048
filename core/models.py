from django.db import models

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
