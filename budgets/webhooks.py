"""Alerts where teams talk: Slack-compatible incoming webhooks and signed JSON webhooks.

Leads configure them per team or per project (/teams/<slug>/webhooks/,
/projects/<slug>/webhooks/). When an alert fires or escalates, one delivery per webhook
of its project or its project's team is recorded in the same transaction, then sent
by a worker with the machinery of alert emails (core.delivery): claimed once, sent,
settled; an endpoint that cannot be reached (or answers 5xx) keeps it owed, one that
refuses it (4xx) counts a refusal; each webhook is its own endpoint, so one that is
down never holds up the others. Given up after EMAIL_GIVE_UP_AFTER_HOURS.

A JSON delivery carries `X-Spendtracker-Timestamp` and `X-Spendtracker-Signature:
sha256=<hex>`, the HMAC-SHA256 of "<timestamp>.<body>" with the webhook's secret.
URLs are https to a public address, unless listed in WEBHOOK_ALLOWLIST: alerts are
never sent into the organisation's own network by a lead's typo or on purpose.
"""

import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import uuid
from dataclasses import dataclass
from functools import partial
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from accounts.models import Team, User
from accounts.permissions import user_can_edit_plan
from budgets.models import Alert, Webhook, WebhookDelivery
from core import audit, delivery
from core.crypto import CredentialsUnreadable, encrypt_json
from core.tasks import enqueue_after_commit
from projects.models import Project

logger = logging.getLogger(__name__)


class WebhookRefused(Exception):
    """The endpoint answered and said no (4xx): a refusal of this message."""


class WebhookUnreachable(OSError):
    """The endpoint did not take it (a redirect, 5xx): it stays owed."""


@dataclass(frozen=True)
class WebhookScope:
    """A team's webhooks, or a project's."""

    team: Team
    project: Project | None = None

    @property
    def team_id(self) -> int:
        return self.team.pk

    @property
    def webhooks(self):
        if self.project is not None:
            return Webhook.objects.filter(project=self.project)
        return Webhook.objects.filter(team=self.team)

    @property
    def name(self) -> str:
        return self.project.name if self.project else self.team.name


def require_webhook_editor(user: User, scope: WebhookScope) -> None:
    if not user_can_edit_plan(user, scope):
        raise PermissionDenied("Only the team's leads and admins configure webhooks.")


def webhook_url_check(url: str) -> None:
    """Refuse a URL alerts may not be posted to (ValidationError saying why)."""
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}"
    if origin in settings.WEBHOOK_ALLOWLIST:
        return
    if parts.scheme != "https" or not parts.hostname:
        raise ValidationError("Give an https:// address.")
    try:
        addresses = {
            info[4][0] for info in socket.getaddrinfo(parts.hostname, parts.port or 443)
        }
    except OSError:
        raise ValidationError(
            f"{parts.hostname} could not be looked up just now (DNS): check the "
            "address, or try again in a moment."
        ) from None
    if not all(ipaddress.ip_address(a.split("%")[0]).is_global for a in addresses):
        raise ValidationError(
            f"{parts.hostname} is an address inside a private network: alerts go "
            "to public services only (an operator may list it in WEBHOOK_ALLOWLIST)."
        )


def webhook_create(
    *, user: User, scope: WebhookScope, name: str, kind: str, url: str
) -> Webhook:
    require_webhook_editor(user, scope)
    url = url.strip()
    try:
        webhook_url_check(url)
    except ValidationError as error:
        raise ValidationError({"url": error.messages}) from None
    token = {"url": url}
    if kind == Webhook.Kind.JSON:
        token["secret"] = secrets.token_urlsafe(32)
    try:
        secrets_token = encrypt_json(token)
    except CredentialsUnreadable as exc:  # no key: nothing secret may be stored
        raise ValidationError({"url": str(exc)}) from None
    webhook = Webhook.objects.create(
        team=None if scope.project else scope.team,
        project=scope.project,
        name=name.strip(),
        kind=kind,
        host=urlsplit(url).hostname or "",
        secrets_token=secrets_token,
        created_by=user,
    )
    _audit(user, "webhook added", webhook)
    return webhook


def _audit(user: User, action: str, webhook: Webhook) -> None:
    """Alerts leave the company through webhooks: who pointed them where is kept
    (the host and kind, never the URL)."""
    audit.record(
        kind=audit.Kind.WEBHOOK,
        action=action,
        target=webhook,
        actor=user,
        details={"host": webhook.host, "kind": webhook.kind},
    )


def webhook_delete(*, user: User, webhook: Webhook, scope: WebhookScope) -> None:
    require_webhook_editor(user, scope)
    _audit(user, "webhook deleted", webhook)
    webhook.delete()


def webhook_test(*, user: User, webhook: Webhook, scope: WebhookScope) -> None:
    """Queue a test message to the webhook; the delivery log shows how it went."""
    require_webhook_editor(user, scope)
    _audit(user, "test message sent", webhook)
    WebhookDelivery.objects.create(webhook=webhook)
    _send_after_commit()


def webhook_deliveries_record(alerts: list[Alert]) -> int:
    """One delivery per alert and webhook of its project or its project's team, in
    the transaction that fires the alerts; the send is queued once it commits."""
    project_ids = {alert.project_id for alert in alerts if alert.project_id}
    if not project_ids:
        return 0
    projects = dict(
        Project.objects.filter(pk__in=project_ids).values_list("pk", "team_id")
    )
    hooks = list(
        Webhook.objects.filter(
            Q(project_id__in=projects) | Q(team_id__in=set(projects.values()))
        )
    )
    deliveries = [
        WebhookDelivery(webhook=hook, alert=alert)
        for alert in alerts
        if alert.project_id
        for hook in hooks
        if hook.project_id == alert.project_id
        or hook.team_id == projects[alert.project_id]
    ]
    WebhookDelivery.objects.bulk_create(deliveries)
    if deliveries:
        _send_after_commit()
    return len(deliveries)


def _send_after_commit() -> None:
    from budgets.tasks import webhooks_send  # tasks import this module

    enqueue_after_commit(webhooks_send)


# Sending --------------------------------------------------------------------------


def webhooks_send_pending() -> int:
    """Send what every webhook is owed, each endpoint with its own circuit breaker;
    how many were sent."""
    sent = 0
    owed = delivery.owed(WebhookDelivery.objects.all())
    for webhook_id in sorted(set(owed.values_list("webhook_id", flat=True))):
        rows = WebhookDelivery.objects.filter(webhook_id=webhook_id)
        sweep = delivery.Sweep(rows)
        for pk in list(delivery.owed(rows).values_list("pk", flat=True)):
            sweep.deliver(
                delivery.owed(rows).filter(pk=pk),
                partial(_delivery_send, pk=pk),
                f"Webhook delivery {pk}",
            )
        sent += sweep.sent
    return sent


def _delivery_send(_claim: uuid.UUID, *, pk: int) -> None:
    row = WebhookDelivery.objects.select_related(
        "webhook", "alert__project__team", "alert__training_run"
    ).get(pk=pk)
    hook = row.webhook
    target = hook.secrets
    if not target:
        raise WebhookRefused(
            "its URL cannot be decrypted (FIELD_ENCRYPTION_KEY has changed): "
            "delete the webhook and add it again"
        )
    webhook_url_check(target["url"])  # again: the name may point elsewhere now
    body = json.dumps(_payload(row), separators=(",", ":"))
    headers = {"Content-Type": "application/json", "User-Agent": "Spendtracker"}
    if hook.kind == Webhook.Kind.JSON:
        stamp = str(int(timezone.now().timestamp()))
        signed = hmac.new(
            target["secret"].encode(), f"{stamp}.{body}".encode(), hashlib.sha256
        )
        headers |= {
            "X-Spendtracker-Timestamp": stamp,
            "X-Spendtracker-Signature": f"sha256={signed.hexdigest()}",
            "X-Spendtracker-Delivery": str(row.pk),
        }
    try:
        answer = requests.post(
            target["url"],
            data=body.encode(),
            headers=headers,
            timeout=settings.WEBHOOK_TIMEOUT,
            allow_redirects=False,
        )
    except requests.RequestException as error:
        # The log keeps requests' own words; the delivery log, a sentence.
        logger.info("webhook delivery %s: %r", pk, error)
        raise WebhookUnreachable(_plainly(hook.host, error)) from None
    WebhookDelivery.objects.filter(pk=pk).update(response_status=answer.status_code)
    if 400 <= answer.status_code < 500:
        raise WebhookRefused(f"{hook.host} answered {answer.status_code}")
    if not 200 <= answer.status_code < 300:
        raise WebhookUnreachable(f"{hook.host} answered {answer.status_code}")


def _plainly(host: str, error: requests.RequestException) -> str:
    if isinstance(error, requests.exceptions.SSLError):
        return f"{host}'s TLS certificate could not be verified"
    if isinstance(error, requests.Timeout):
        return f"{host} did not answer within {settings.WEBHOOK_TIMEOUT} seconds"
    if isinstance(error, requests.ConnectionError):
        return f"could not connect to {host}"
    return f"the request to {host} failed"


def _payload(row: WebhookDelivery) -> dict:
    alert, hook = row.alert, row.webhook
    scope = hook.project.name if hook.project_id else hook.team.name
    if alert is None:
        text = f"Test from Spendtracker: this channel hears of the alerts of {scope}."
        if hook.kind == Webhook.Kind.SLACK:
            return {"text": text}
        return {"event": "test", "delivery": row.pk, "text": text, "alert": None}
    link = settings.SITE_URL.rstrip("/") + reverse("alert_detail", args=[alert.pk])
    if hook.kind == Webhook.Kind.SLACK:
        return {
            "text": f"*{alert.get_severity_display()}*: {alert.subject}\n"
            f"{alert.reason}\n<{link}|Open in Spendtracker>"
        }
    return {
        "event": "alert",
        "delivery": row.pk,
        "alert": {
            "id": alert.pk,
            "kind": alert.kind,
            "severity": alert.severity,
            "status": alert.status,
            "subject": alert.subject,
            "reason": alert.reason,
            "threshold": str(alert.threshold),
            "project": alert.project.slug if alert.project else None,
            "team": alert.project.team.slug if alert.project else None,
            "training_run": alert.training_run.external_id
            if alert.training_run
            else None,
            "fired_at": alert.fired_at.isoformat(),
            "url": link,
        },
    }
