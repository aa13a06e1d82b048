"""API tokens (/account/tokens/): shown once, kept hashed, expiring, revocable; a run
reporter's token posts its project's run events and nothing else."""

from datetime import UTC, datetime, timedelta

import pytest
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.urls import reverse
from rest_framework.test import APIClient

from projects.models import ApiToken
from projects.tokens import api_token_create, key_hash
from tests.conftest import make_project, make_run

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
PROJECTS = reverse("api_project_list")


@pytest.fixture(autouse=True)
def frozen(time_machine):
    time_machine.move_to(NOW, tick=False)


def bearer(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def test_a_new_token_is_shown_once_and_only_its_hash_is_kept(client, world):
    client.force_login(world.lead)

    page = client.post(
        reverse("account_tokens"),
        {"name": "notebook", "expires_in_days": "30"},
        follow=True,
    )

    assert page.redirect_chain == [(reverse("account_tokens"), 302)]  # a reload: GET
    key = page.context["key"]
    assert key.startswith("spt_") and key in page.content.decode()
    token = ApiToken.objects.get()
    assert (token.user, token.kind, token.project) == (world.lead, "personal", None)
    assert token.key_hash == key_hash(key) and key not in str(
        ApiToken.objects.values().get()
    )
    assert token.expires_at == NOW + timedelta(days=30)
    again = client.get(reverse("account_tokens")).content.decode()
    assert key not in again and token.prefix in again  # never shown again
    assert ApiToken.objects.count() == 1


def test_a_token_acts_as_its_user_and_records_its_last_use(world):
    _, key = api_token_create(user=world.lead, name="cli", expires_in_days=90)

    answer = bearer(key).get(PROJECTS)

    assert answer.status_code == 200
    assert [p["slug"] for p in answer.json()["results"]] == [world.project.slug]
    assert ApiToken.objects.get().last_used_at == NOW
    old_style = APIClient()
    old_style.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert old_style.get(PROJECTS).status_code == 200


@pytest.mark.parametrize(
    "mangle, reason",
    [
        (lambda key: key[:-1] + ("A" if key[-1] != "A" else "B"), "Invalid token."),
        (lambda key: "spt_nothing_like_it", "Invalid token."),
    ],
)
def test_a_wrong_key_gets_401_saying_so(world, mangle, reason):
    _, key = api_token_create(user=world.lead, name="cli", expires_in_days=90)
    answer = bearer(mangle(key)).get(PROJECTS)
    assert answer.status_code == 401
    assert answer.json() == {"detail": reason}
    assert answer["WWW-Authenticate"] == 'Bearer realm="api"'


def test_an_expired_or_revoked_token_gets_401_and_no_credentials_401(
    client, world, time_machine
):
    _, expiring = api_token_create(user=world.lead, name="old", expires_in_days=7)
    revoked, key = api_token_create(user=world.lead, name="leaked", expires_in_days=90)
    client.force_login(world.lead)
    client.post(reverse("account_token_revoke", args=[revoked.pk]))
    time_machine.move_to(NOW + timedelta(days=7), tick=False)

    assert bearer(expiring).get(PROJECTS).json() == {
        "detail": "The token “old” expired on 2026-03-17."
    }
    assert bearer(key).get(PROJECTS).status_code == 401
    assert "“leaked” was revoked" in bearer(key).get(PROJECTS).json()["detail"]
    assert APIClient().get(PROJECTS).status_code == 401


def test_only_its_owner_revokes_a_token(client, world):
    token, key = api_token_create(user=world.lead, name="cli", expires_in_days=90)
    client.force_login(world.member)
    assert (
        client.post(reverse("account_token_revoke", args=[token.pk])).status_code == 404
    )
    assert bearer(key).get(PROJECTS).status_code == 200


def test_a_run_reporters_token_posts_its_projects_run_events_only(world):
    run = make_run(world.project, name="R", external_id="r")
    sibling = make_project(world.team, world.lead, "sibling")
    other_run = make_run(sibling, name="S", external_id="s")
    _, key = api_token_create(
        user=world.lead, name="job", expires_in_days=30, project=world.project
    )
    reporter = bearer(key)
    event = {"kind": "start", "idempotency_key": "k", "gpu_count": 8}

    ours = reporter.post(reverse("api_run_events", args=[run.pk]), event, format="json")
    theirs = reporter.post(
        reverse("api_run_events", args=[other_run.pk]), event, format="json"
    )
    listing = reporter.get(PROJECTS)

    assert ours.status_code == 201
    assert theirs.status_code == 403
    assert "reports the runs of" in theirs.json()["detail"]
    assert listing.status_code == 403
    assert "may only post the events" in listing.json()["detail"]
    assert not other_run.events.exists()


def test_only_a_plan_editor_makes_a_run_reporters_token(client, world):
    with pytest.raises(PermissionDenied):
        api_token_create(
            user=world.member, name="x", expires_in_days=30, project=world.project
        )
    client.force_login(world.member)
    page = client.post(
        reverse("account_tokens"),
        {"name": "x", "expires_in_days": "30", "project": world.project.pk},
    )
    assert "project" in page.context["form"].errors
    assert not ApiToken.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_plain_tokens_of_before_become_hashed_and_keep_working(world):
    """Django REST framework's tokens were kept in clear in authtoken_token."""
    before = [("projects", "0004_api_token")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    key = "9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b"
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE authtoken_token (key varchar(40) PRIMARY KEY, "
            "created timestamptz NOT NULL, user_id bigint NOT NULL)"
        )
        cursor.execute(
            "INSERT INTO authtoken_token VALUES (%s, now(), %s)", [key, world.lead.pk]
        )

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    assert "authtoken_token" not in connection.introspection.table_names()
    token = ApiToken.objects.get()
    assert (token.user_id, token.key_hash) == (world.lead.pk, key_hash(key))
    assert bearer(key).get(PROJECTS).status_code == 200
