"""Alerts to Slack-compatible and signed JSON webhooks: configured by leads, recorded
with the alert, sent once by the claim-and-retry machinery of alert emails, each
endpoint on its own; a test button and a delivery log."""

import hashlib
import hmac
import json
import threading
from datetime import UTC, date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography.fernet import Fernet
from django.db import connection
from django.urls import reverse

from budgets.alerts import alerts_evaluate
from budgets.models import Alert, AlertKind, AlertRule, Webhook, WebhookDelivery
from budgets.webhooks import (
    WebhookScope,
    webhook_create,
    webhook_deliveries_record,
    webhooks_send_pending,
)
from core.delivery import MAX_REFUSALS
from core.models import AuditEvent
from tests.conftest import make_spend
from tests.smtp_servers import free_port

pytestmark = pytest.mark.django_db


class Receiver:
    """An HTTP endpoint on loopback that records what it is sent and answers with
    `status`; stopped, its port is closed."""

    def __init__(self, status: int = 200) -> None:
        self.status, self.received = status, []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                owner.received.append((dict(self.headers), body))
                self.send_response(owner.status)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(settings):
    endpoint = Receiver()
    settings.WEBHOOK_ALLOWLIST = [endpoint.origin]
    yield endpoint
    endpoint.stop()


@pytest.fixture
def frozen(time_machine):
    time_machine.move_to(datetime(2026, 1, 5, 9, tzinfo=UTC), tick=False)


def project_scope(world) -> WebhookScope:
    return WebhookScope(team=world.team, project=world.project)


def hook(world, receiver, kind=Webhook.Kind.JSON, path="/hook", scope=None):
    return webhook_create(
        user=world.lead,
        scope=scope or project_scope(world),
        name=f"{kind} hook",
        kind=kind,
        url=receiver.origin + path,
    )


def test_a_lead_adds_a_webhook_kept_encrypted_and_shown_by_its_host(
    client, world, receiver
):
    client.force_login(world.lead)
    url = f"{receiver.origin}/services/T000/B000/XXXXSECRET"
    page = client.post(
        reverse("project_webhooks", args=[world.project.slug]),
        {"name": "#ml-alerts", "kind": "slack", "url": url},
        follow=True,
    )
    webhook = Webhook.objects.get()
    assert (webhook.project, webhook.team, webhook.host) == (
        world.project,
        None,
        "127.0.0.1",
    )
    assert "XXXXSECRET" not in str(Webhook.objects.values().get())
    assert webhook.secrets["url"] == url
    text = page.content.decode()
    assert "will hear of" in text and "XXXXSECRET" not in text


@pytest.mark.parametrize(
    "url, reason",
    [
        ("http://hooks.example.com/x", "Give an https:// address."),
        ("https://127.0.0.1/hook", "inside a private network"),
        ("https://10.1.2.3/hook", "inside a private network"),
        ("https://no-such-host.invalid/hook", "could not be looked up just now"),
    ],
)
def test_a_webhook_goes_to_a_public_https_address_only(client, world, url, reason):
    client.force_login(world.lead)
    page = client.post(
        reverse("project_webhooks", args=[world.project.slug]),
        {"name": "x", "kind": "json", "url": url},
    )
    assert page.status_code == 200
    assert reason in page.content.decode()
    assert not Webhook.objects.exists()


def test_a_fired_alert_is_recorded_for_its_projects_and_its_teams_webhooks(
    world, receiver, frozen
):
    ours = hook(world, receiver)
    teams = hook(world, receiver, scope=WebhookScope(team=world.team))
    webhook_create(  # another team's project: hears nothing of this alert
        user=world.outsider,
        scope=WebhookScope(team=world.other_team, project=world.other_project),
        name="theirs",
        kind="json",
        url=receiver.origin + "/theirs",
    )
    world.alert.delete()
    for other in AlertKind.values:
        if other != AlertKind.BUDGET_USED:
            AlertRule.objects.create(kind=other, is_enabled=False)
    make_spend(world.project, date(2026, 1, 3), "1200")

    alerts_evaluate(now=datetime(2026, 1, 5, 9, tzinfo=UTC), send_later=False)

    alert = Alert.objects.get()
    assert set(WebhookDelivery.objects.values_list("webhook", "alert", "status")) == {
        (ours.pk, alert.pk, "pending"),
        (teams.pk, alert.pk, "pending"),
    }


def test_each_message_is_sent_once_signed_and_slack_gets_text(world, receiver):
    signed = hook(world, receiver, Webhook.Kind.JSON, "/json")
    slack = hook(world, receiver, Webhook.Kind.SLACK, "/slack")
    webhook_deliveries_record([world.alert])

    assert webhooks_send_pending() == 2
    assert webhooks_send_pending() == 0  # nothing owed twice

    by_path = {}
    for headers, body in receiver.received:
        by_path[json.loads(body).get("event", "slack")] = (headers, body)
    headers, body = by_path["alert"]
    expected = hmac.new(
        signed.secrets["secret"].encode(),
        f"{headers['X-Spendtracker-Timestamp']}.".encode() + body,
        hashlib.sha256,
    ).hexdigest()
    assert headers["X-Spendtracker-Signature"] == f"sha256={expected}"
    payload = json.loads(body)["alert"]
    assert (payload["id"], payload["subject"], payload["project"]) == (
        world.alert.pk,
        world.alert.subject,
        world.project.slug,
    )
    slack_text = json.loads(by_path["slack"][1])["text"]
    assert world.alert.subject in slack_text and "Open in Spendtracker" in slack_text
    assert "X-Spendtracker-Signature" not in by_path["slack"][0]
    assert set(WebhookDelivery.objects.values_list("status", "response_status")) == {
        ("sent", 200)
    }
    assert slack.deliveries.get().sent_at is not None


def test_an_endpoint_that_is_down_keeps_its_messages_owed_and_holds_up_no_other(
    world, receiver, settings
):
    dead_origin = f"http://127.0.0.1:{free_port()}"
    settings.WEBHOOK_ALLOWLIST = [receiver.origin, dead_origin]
    dead = webhook_create(
        user=world.lead,
        scope=project_scope(world),
        name="down",
        kind="json",
        url=dead_origin + "/x",
    )
    alive = hook(world, receiver)
    alerts = [world.alert]
    for n in range(4):  # more than the breaker lets one endpoint fail
        alerts.append(
            Alert.objects.create(
                kind=AlertKind.BUDGET_USED,
                scope_key=f"project:{world.project.pk}:{n}",
                period=date(2026, 1, 1),
                threshold=50 + n,
                value=50 + n,
                project=world.project,
                severity=Alert.Severity.WARNING,
                subject=f"alert {n}",
                reason="r",
                fired_at=datetime(2026, 1, 5, tzinfo=UTC),
            )
        )
    webhook_deliveries_record(alerts)

    assert webhooks_send_pending() == len(alerts)  # every one to the live endpoint

    assert alive.deliveries.filter(status="sent").count() == len(alerts)
    down = dead.deliveries.all()
    assert {row.status for row in down} == {"pending"}
    assert sum(row.attempts for row in down) == 3  # then the breaker stopped it
    assert (
        "could not connect to 127.0.0.1"
        in down.exclude(last_error="").first().last_error
    )


def test_a_message_refused_with_4xx_is_given_up_after_repeated_refusals(
    world, receiver
):
    receiver.status = 410
    hook(world, receiver)
    webhook_deliveries_record([world.alert])
    for _ in range(MAX_REFUSALS):
        webhooks_send_pending()
    row = WebhookDelivery.objects.get()
    assert (row.status, row.response_status, row.refusals) == (
        "given_up",
        410,
        MAX_REFUSALS,
    )
    assert "answered 410" in row.given_up_reason


@pytest.mark.django_db(transaction=True)
def test_two_workers_sending_at_once_send_each_message_once(world, receiver):
    hook(world, receiver)
    webhook_deliveries_record([world.alert])
    barrier = threading.Barrier(2)

    def send() -> None:
        try:
            barrier.wait(10)
            webhooks_send_pending()
        finally:
            connection.close()

    workers = [threading.Thread(target=send) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert len(receiver.received) == 1


def test_the_test_button_queues_a_test_message_the_log_shows(
    client, world, receiver, eager_tasks, django_capture_on_commit_callbacks
):
    webhook = hook(world, receiver, Webhook.Kind.SLACK)
    client.force_login(world.lead)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("webhook_test", args=[webhook.pk]))

    [(_, body)] = receiver.received
    assert "Test from Spendtracker" in json.loads(body)["text"]
    page = client.get(reverse("project_webhooks", args=[world.project.slug]))
    log = page.content.decode()
    assert "Test message" in log and "sent" in log


def test_who_may_configure_webhooks(client, world, receiver):
    webhook = hook(world, receiver)
    url = reverse("project_webhooks", args=[world.project.slug])
    answers = {}
    for name in ("lead", "member", "outsider", "finance", "admin"):
        client.force_login(getattr(world, name))
        answers[name] = (
            client.get(url).status_code,
            client.post(reverse("webhook_delete", args=[webhook.pk])).status_code,
        )
    # The lead's delete came first and succeeded: the rest find nothing to delete.
    assert answers["lead"] == (200, 302)
    assert answers["member"][0] == 403
    assert answers["outsider"][0] == 404
    assert answers["finance"][0] == 403
    assert answers["admin"][0] == 200
    assert not Webhook.objects.exists()


def test_a_member_cannot_delete_or_test_a_webhook(client, world, receiver):
    webhook = hook(world, receiver)
    client.force_login(world.member)
    assert client.post(reverse("webhook_delete", args=[webhook.pk])).status_code == 403
    assert client.post(reverse("webhook_test", args=[webhook.pk])).status_code == 403
    client.force_login(world.outsider)
    assert client.post(reverse("webhook_delete", args=[webhook.pk])).status_code == 404
    assert Webhook.objects.filter(pk=webhook.pk).exists()
    assert not WebhookDelivery.objects.exists()


def test_without_a_key_no_webhook_is_stored_and_the_form_says_why(
    client, world, receiver, settings
):
    settings.FIELD_ENCRYPTION_KEY = ""
    client.force_login(world.lead)
    page = client.post(
        reverse("project_webhooks", args=[world.project.slug]),
        {"name": "x", "kind": "slack", "url": receiver.origin + "/x"},
    )
    assert page.status_code == 200
    assert "FIELD_ENCRYPTION_KEY is not set" in page.content.decode()
    assert not Webhook.objects.exists()


def test_a_webhook_whose_key_changed_says_so_and_its_messages_are_refused(
    client, world, receiver, settings
):
    hook(world, receiver)
    webhook_deliveries_record([world.alert])
    settings.FIELD_ENCRYPTION_KEY = Fernet.generate_key().decode()

    webhooks_send_pending()

    row = WebhookDelivery.objects.get()
    assert (row.status, row.refusals) == ("pending", 1)
    assert "cannot be decrypted" in row.last_error
    assert not receiver.received
    client.force_login(world.lead)
    page = client.get(reverse("project_webhooks", args=[world.project.slug]))
    assert "Its URL cannot be read" in page.content.decode()


def test_adding_testing_and_deleting_a_webhook_is_audited_without_its_url(
    client, world, receiver
):
    webhook = hook(world, receiver, path="/secret-path")
    client.force_login(world.lead)
    client.post(reverse("webhook_test", args=[webhook.pk]))
    client.post(reverse("webhook_delete", args=[webhook.pk]))

    events = AuditEvent.objects.filter(kind=AuditEvent.Kind.WEBHOOK).order_by("at")
    assert [(e.actor, e.action) for e in events] == [
        (world.lead, "webhook added"),
        (world.lead, "test message sent"),
        (world.lead, "webhook deleted"),
    ]
    assert events[0].details == {"host": "127.0.0.1", "kind": "json"}
    assert "secret-path" not in str(list(events.values()))
