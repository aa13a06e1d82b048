"""Alert emails: one function per email, each sent at most once.

A notification row is written in the same transaction as the alert it is about (the
decision). Sending claims it with a conditional UPDATE (pending → sending, with a claim
id), sends, then marks it sent under the same claim. A second worker finds nothing to
claim. A worker that dies after claiming leaves the row in `sending`; once its lease
has run out, the next sweep claims it again and sends it. The one case that can still
send twice is a worker dying after the mail server accepted the message and before
the row was marked sent: no database can make an SMTP hand-off atomic. A mail server
that is down, hangs or refuses a message is handled by the sweep they share with the
report emails (core.delivery.Sweep).
"""

import uuid
from datetime import date, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db.models import QuerySet
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from accounts.models import User
from budgets.alerts.figures import daily_spend, project_figures, run_figures
from budgets.models import Alert, Notification
from budgets.services import project_summary, run_summaries
from core import delivery
from core.currencies import ZERO
from core.delivery import LEASE as LEASE
from core.delivery import MAX_REFUSALS as MAX_REFUSALS


def _owed(channel: str) -> QuerySet[Notification]:
    return delivery.owed(Notification.objects.filter(channel=channel))


def notifications_send_pending() -> int:
    """Send every immediate alert email still owed; the number sent by this call."""
    sweep = delivery.Sweep(
        Notification.objects.filter(channel=Notification.Channel.IMMEDIATE)
    )
    for pk in list(_owed(Notification.Channel.IMMEDIATE).values_list("pk", flat=True)):
        sweep.deliver(
            _owed(Notification.Channel.IMMEDIATE).filter(pk=pk),
            partial(_notification_send, pk=pk),
            f"Alert email {pk}",
        )
    return sweep.sent


def _notification_send(_claim: uuid.UUID, *, pk: int) -> None:
    notification = Notification.objects.select_related(
        "user", "alert__project__team", "alert__training_run", "alert__source"
    ).get(pk=pk)
    alert_email_send(alert=notification.alert, user=notification.user)


def digests_send() -> int:
    """One email per person with the alerts waiting for their daily digest."""
    # A digest row is due at the next digest, up to a day after it was recorded.
    sweep = delivery.Sweep(
        Notification.objects.filter(channel=Notification.Channel.DIGEST),
        due_after=timedelta(days=1),
    )
    owed = _owed(Notification.Channel.DIGEST)
    for user_id in sorted(set(owed.values_list("user_id", flat=True))):
        sweep.deliver(
            _owed(Notification.Channel.DIGEST).filter(user_id=user_id),
            partial(_digest_send, user_id=user_id),
            f"Digest for user {user_id}",
        )
    return sweep.sent


def _digest_send(claim: uuid.UUID, *, user_id: int) -> None:
    alerts = list(
        Alert.objects.filter(notifications__claim=claim)
        .select_related("project", "training_run", "source")
        .order_by("-fired_at")
    )
    digest_email_send(alerts=alerts, user=User.objects.get(pk=user_id))


def _link(path: str) -> str:
    return settings.SITE_URL.rstrip("/") + path


def alert_email_send(*, alert: Alert, user: User) -> None:
    """The figures the alert fired with, however late this goes, and the latest beside
    them if they have moved since. An alert that fired before figures were kept shows
    the latest alone, labelled as such."""
    today = timezone.now().date()
    latest = _latest_figures(alert, as_of=today)
    kept = alert.fired_as_of is not None
    figures = alert.figures if kept else latest
    moved = kept and any(figures.get(key) != value for key, value in latest.items())
    context = {
        "alert": alert,
        "user": user,
        "figures": figures,
        "as_of": alert.fired_as_of or today,
        "kept": kept,
        "latest": latest if moved else None,
        "latest_as_of": today,
        "bars": _bars(daily_spend(figures)),
        "escalated": alert.escalated_from_id is not None,
        "alert_url": _link(alert.get_absolute_url()),
        "project_url": _link(alert.project.get_absolute_url()) if alert.project else "",
        "settings_url": _link(reverse("notification_settings")),
    }
    prefix = "Escalated: " if context["escalated"] else ""
    _send(
        subject=f"[Spendtracker] {prefix}{alert.fired_subject}",
        template="emails/alert",
        context=context,
        to=user.email,
    )


def _latest_figures(alert: Alert, *, as_of: date) -> dict[str, Any]:
    if alert.training_run:
        return run_figures(run_summaries(runs=[alert.training_run], as_of=as_of)[0])
    if alert.project:
        return project_figures(project_summary(project=alert.project, as_of=as_of))
    return {}


def _bars(trend: list[tuple[date, Decimal]]) -> list[tuple[date, Decimal, int]]:
    """Daily spend as bar heights in pixels, for a chart made of table cells."""
    highest = max((amount for _day, amount in trend), default=ZERO)
    if not highest:
        return []
    return [
        (day, amount, max(1, round(48 * amount / highest))) for day, amount in trend
    ]


def digest_email_send(*, alerts: list[Alert], user: User) -> None:
    context = {
        "alerts": alerts,
        "user": user,
        "alerts_url": _link(reverse("alert_list")),
        "settings_url": _link(reverse("notification_settings")),
        "site_url": settings.SITE_URL.rstrip("/"),
    }
    count = len(alerts)
    _send(
        subject=f"[Spendtracker] Daily digest: {count} new alert{'s' * (count != 1)}",
        template="emails/digest",
        context=context,
        to=user.email,
    )


def _send(*, subject: str, template: str, context: dict, to: str) -> None:
    message = EmailMultiAlternatives(
        subject=" ".join(subject.split()),
        body=render_to_string(f"{template}.txt", context),
        to=[to],
    )
    message.attach_alternative(
        render_to_string(f"{template}.html", context), "text/html"
    )
    message.send()
