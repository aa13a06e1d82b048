"""How long ago beat's heartbeat ran: what /healthz reports of beat."""

from datetime import datetime, timedelta

from core.models import BEAT, Heartbeat


def beat_age(now: datetime) -> timedelta | None:
    """How long ago the beat heartbeat last ran; None before it ever has."""
    beat_at = (
        Heartbeat.objects.filter(name=BEAT).values_list("beat_at", flat=True).first()
    )
    return None if beat_at is None else now - beat_at
