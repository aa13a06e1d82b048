"""Every acknowledgement of an alert is kept with its note, from the portal and the
API; who was emailed and who acknowledged are shown by name, never by address."""

from datetime import UTC, date, datetime

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.urls import reverse

from budgets.models import Acknowledgement, Alert, Notification
from projects.tokens import api_token_create

pytestmark = pytest.mark.django_db


def acknowledge(client, world, user, note: str):
    client.force_login(user)
    return client.post(reverse("alert_detail", args=[world.alert.pk]), {"note": note})


def test_a_second_acknowledgement_keeps_the_first_and_its_note(client, world):
    acknowledge(client, world, world.member, "Cutting the eval sweep to 2 seeds.")
    acknowledge(client, world, world.lead, "Also pausing the nightly run.")
    world.alert.refresh_from_db()
    assert world.alert.status == Alert.Status.ACKNOWLEDGED
    assert world.alert.acknowledged_by == world.member  # who took it on first
    history = list(world.alert.acknowledgements.values_list("user__email", "note"))
    assert history == [
        ("member@test.example", "Cutting the eval sweep to 2 seeds."),
        ("lead@test.example", "Also pausing the nightly run."),
    ]
    page = client.get(reverse("alert_detail", args=[world.alert.pk])).content.decode()
    assert page.index("Cutting the eval sweep") < page.index("Also pausing")
    assert page.count('data-testid="acknowledgement"') == 2


def test_a_resolved_alert_takes_no_acknowledgement(client, world):
    Alert.objects.filter(pk=world.alert.pk).update(status=Alert.Status.RESOLVED)
    response = acknowledge(client, world, world.lead, "too late")
    assert response.status_code == 302
    assert not Acknowledgement.objects.exists()


def test_the_api_appends_an_acknowledgement_and_lists_them_by_name(client, world):
    acknowledge(client, world, world.member, "On it.")
    _, key = api_token_create(user=world.lead, name="script", expires_in_days=30)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    client.logout()
    url = reverse("api_alert_acknowledge", args=[world.alert.pk])
    response = client.post(url, {"note": "Pausing the run."}, **auth)
    assert response.status_code == 200
    assert [a["note"] for a in response.json()["acknowledgements"]] == [
        "On it.",
        "Pausing the run.",
    ]
    listed = client.get(reverse("api_alert_list"), **auth).json()["results"][0]
    # Lena Lead has a name; the member has none: a number, never their address.
    assert [a["by"] for a in listed["acknowledgements"]] == [
        f"Unnamed user #{world.member.pk}",
        "Lena Lead",
    ]
    assert "member@test.example" not in str(listed)


def test_an_outsider_cannot_acknowledge_through_the_api(client, world):
    client.force_login(world.outsider)
    url = reverse("api_alert_acknowledge", args=[world.alert.pk])
    assert client.post(url, {"note": "mine"}).status_code == 404
    assert not Acknowledgement.objects.exists()


def test_the_api_says_when_the_alert_already_resolved(client, world):
    Alert.objects.filter(pk=world.alert.pk).update(status=Alert.Status.RESOLVED)
    client.force_login(world.lead)
    url = reverse("api_alert_acknowledge", args=[world.alert.pk])
    response = client.post(url, {"note": "late"})
    assert response.status_code == 409
    assert response.json() == {"detail": "This alert was already resolved."}


@pytest.mark.parametrize("persona", ["member", "lead"])
def test_team_users_see_who_was_emailed_by_name_not_by_address(client, world, persona):
    for user in (world.lead, world.member, world.finance):
        Notification.objects.create(
            alert=world.alert, user=user, channel=Notification.Channel.IMMEDIATE
        )
    acknowledge(client, world, world.member, "On it.")
    viewer = getattr(world, persona)
    client.force_login(viewer)
    page = client.get(reverse("alert_detail", args=[world.alert.pk])).content.decode()
    assert "Lena Lead" in page
    assert f"Unnamed user #{world.member.pk}" in page
    others = {world.lead, world.member, world.finance} - {viewer}
    for other in others:  # the sidebar names the viewer, as is theirs to see
        assert other.email not in page


def with_budgets_at(migration: str) -> list[tuple[str, str]]:
    """Every app at its latest migration, budgets at `migration`."""
    leaves = MigrationExecutor(connection).loader.graph.leaf_nodes()
    return [node for node in leaves if node[0] != "budgets"] + [("budgets", migration)]


@pytest.mark.django_db(transaction=True)
def test_the_note_an_alert_kept_becomes_the_first_of_its_history():
    before = with_budgets_at("0007_budget_version_and_authors")
    after = with_budgets_at("0008_acknowledgement_history")
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    try:
        old = executor.loader.project_state(before).apps
        user = old.get_model("accounts", "User").objects.create(email="l@test.example")
        fields = {
            "kind": "budget_used",
            "period": date(2026, 1, 1),
            "threshold": 80,
            "severity": "warning",
            "subject": "s",
            "reason": "r",
            "value": 85,
            "fired_at": datetime(2026, 1, 20, tzinfo=UTC),
        }
        alerts = old.get_model("budgets", "Alert").objects
        acknowledged = alerts.create(
            scope_key="project:1",
            acknowledged_by=user,
            acknowledged_at=datetime(2026, 1, 21, tzinfo=UTC),
            acknowledgement_note="On it.",
            **fields,
        )
        alerts.create(scope_key="project:2", **fields)
        executor = MigrationExecutor(connection)
        executor.migrate(after)
        new = executor.loader.project_state(after).apps
        kept = new.get_model("budgets", "Acknowledgement").objects.values_list(
            "alert_id", "user_id", "at", "note"
        )
        assert list(kept) == [
            (
                acknowledged.pk,
                user.pk,
                datetime(2026, 1, 21, tzinfo=UTC),
                "On it.",
            )
        ]
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
