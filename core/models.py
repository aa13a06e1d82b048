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
