"""Admins add and change billing sources in the portal, with Django admin's form:
the endpoint check, write-only masked credentials, credentials cleared when the
endpoint or kind changes; a new source says when its first data can be expected."""

import pytest
from django.urls import reverse

from billing.models import BillingSource
from core.models import AuditEvent

pytestmark = pytest.mark.django_db

API_KEY = "sk-admin-1234567890abcdef"
LISTENER = "http://127.0.0.1:8765"


def fields(**overrides: str) -> dict[str, str]:
    return {
        "name": "OpenAI org",
        "kind": "openai",
        "is_enabled": "on",
        "config": "{}",
        "sync_every_minutes": "360",
        "new_credentials": "",
        **overrides,
    }


@pytest.fixture
def openai_source() -> BillingSource:
    source = BillingSource(name="OpenAI org", kind="openai", config={})
    source.credentials = {"api_key": API_KEY}
    source.save()
    return source


@pytest.mark.parametrize(
    ("persona", "expected"),
    [("lead", 403), ("member", 403), ("outsider", 403), ("finance", 403)],
)
def test_only_admins_may_post_a_source(client, world, persona, expected):
    client.force_login(getattr(world, persona))
    created = client.post(reverse("source_create"), fields(name="Sneaky"))
    edited = client.post(
        reverse("source_edit", args=[world.source.pk]), fields(name="Renamed")
    )
    assert created.status_code == edited.status_code == expected
    assert not BillingSource.objects.filter(name__in=["Sneaky", "Renamed"]).exists()


def test_anonymous_posts_are_sent_to_log_in(client, world):
    response = client.post(reverse("source_create"), fields())
    assert response.status_code == 302
    assert not BillingSource.objects.filter(name="OpenAI org").exists()


def test_an_admin_adds_a_fetched_source_and_is_told_when_its_data_comes(client, world):
    client.force_login(world.admin)
    response = client.post(
        reverse("source_create"),
        fields(new_credentials=f'{{"api_key": "{API_KEY}"}}'),
        follow=True,
    )
    source = BillingSource.objects.get(name="OpenAI org")
    assert source.credentials == {"api_key": API_KEY}
    shown = [str(message) for message in response.context["messages"]]
    assert shown == [
        "The source “OpenAI org” was added. The first sync runs within 15 minutes, "
        "then every 360 minutes."
    ]
    page = response.content.decode()
    assert API_KEY not in page
    assert AuditEvent.objects.filter(
        kind=AuditEvent.Kind.SOURCE, action="added in the portal"
    ).exists()


# An AWS source without a bucket is one whose files people import.
@pytest.mark.parametrize("kind", ["invoice-csv", "aws-cur"])
def test_a_new_upload_source_says_where_to_upload(client, world, kind):
    client.force_login(world.admin)
    response = client.post(
        reverse("source_create"),
        fields(name="GPU cloud", kind=kind),
        follow=True,
    )
    shown = [str(message) for message in response.context["messages"]]
    assert shown == [
        "The source “GPU cloud” was added. Upload its files at /billing/upload/."
    ]


def test_credentials_are_write_only_and_shown_masked(client, world, openai_source):
    client.force_login(world.admin)
    page = client.get(reverse("source_edit", args=[openai_source.pk])).content.decode()
    assert API_KEY not in page
    assert openai_source.masked_credentials["api_key"] in page
    assert 'name="new_credentials"' in page
    assert "sk-admin-1234567890" not in page


def test_a_bad_endpoint_is_refused_with_the_reason(
    client, world, openai_source, settings
):
    settings.SOURCE_ENDPOINT_ALLOWLIST = []
    client.force_login(world.admin)
    response = client.post(
        reverse("source_edit", args=[openai_source.pk]),
        fields(config=f'{{"base_url": "{LISTENER}"}}'),
    )
    assert response.status_code == 200
    assert response.context["form"].errors["config"] == [
        f"base_url: {LISTENER} is not an address of the provider (api.openai.com "
        "over https): credentials are only sent there, or to an address an operator "
        "lists in SOURCE_ENDPOINT_ALLOWLIST."
    ]
    openai_source.refresh_from_db()
    assert openai_source.config == {}


def test_changing_the_endpoint_clears_the_credentials_and_says_so(
    client, world, openai_source, settings
):
    settings.SOURCE_ENDPOINT_ALLOWLIST = [LISTENER]
    client.force_login(world.admin)
    response = client.post(
        reverse("source_edit", args=[openai_source.pk]),
        fields(config=f'{{"base_url": "{LISTENER}"}}'),
        follow=True,
    )
    openai_source.refresh_from_db()
    assert openai_source.config == {"base_url": LISTENER}
    assert openai_source.credentials_token == ""
    shown = [str(message) for message in response.context["messages"]]
    assert shown == [
        "The source's endpoint or kind changed, so its stored credentials were "
        "removed: enter them again for the new endpoint.",
        "The source “OpenAI org” was saved.",
    ]


def test_saving_other_settings_keeps_the_credentials(client, world, openai_source):
    client.force_login(world.admin)
    client.post(
        reverse("source_edit", args=[openai_source.pk]),
        fields(is_enabled="", sync_every_minutes="60"),
    )
    openai_source.refresh_from_db()
    assert not openai_source.is_enabled
    assert openai_source.sync_every_minutes == 60
    assert openai_source.credentials == {"api_key": API_KEY}
