"""Where a source may send its credentials: the provider's own hosts over https, or
an address an operator lists in SOURCE_ENDPOINT_ALLOWLIST; checked when an admin saves
the source and again before every fetch, and a changed endpoint forgets the
credentials."""

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.urls import reverse

from billing.endpoints import EndpointRefused, endpoint_check
from billing.importers.aws_s3 import S3Bucket
from billing.importers.azure_blob import blob_service
from billing.importers.base import ImportFailure
from billing.models import BillingSource, ImportRun
from billing.services import billing_sync_source

pytestmark = pytest.mark.django_db

API_KEY = "sk-admin-1234567890abcdef"
LISTENER = "http://127.0.0.1:8765"


@pytest.mark.parametrize(
    ("kind", "url"),
    [
        ("openai", "https://api.openai.com"),
        ("openai", "https://api.openai.com:443/"),
        ("anthropic", "https://api.anthropic.com"),
        ("aws-cur", "https://s3.eu-west-1.amazonaws.com"),
        ("azure", "https://acme.blob.core.windows.net"),
    ],
)
def test_the_providers_own_hosts_over_https_are_allowed(kind, url, settings):
    settings.SOURCE_ENDPOINT_ALLOWLIST = []
    endpoint_check(kind=kind, url=url)


@pytest.mark.parametrize(
    ("kind", "url"),
    [
        ("openai", LISTENER),
        ("openai", "http://api.openai.com"),  # the key would cross in clear
        ("openai", "https://api.openai.com:8443"),
        ("openai", "https://api.openai.com.evil.example"),
        ("openai", "https://user:pass@api.openai.com"),
        ("openai", "https://api.anthropic.com"),  # another provider's host
        ("anthropic", "https://evil.example/api.anthropic.com"),
        ("aws-cur", "https://amazonaws.com.evil.example"),
        ("azure", "https://acme.blob.core.windows.net.evil.example"),
        ("azure", "http://127.0.0.1:10000/devstoreaccount1"),
        ("openai", "not a url"),
        ("openai", "https://api.openai.com:port"),
    ],
)
def test_any_other_address_is_refused_unless_allowlisted(kind, url, settings):
    settings.SOURCE_ENDPOINT_ALLOWLIST = []
    with pytest.raises(EndpointRefused):
        endpoint_check(kind=kind, url=url)


def test_an_allowlisted_address_is_allowed_with_its_scheme_host_and_port(settings):
    settings.SOURCE_ENDPOINT_ALLOWLIST = [LISTENER, "https://proxy.corp"]
    endpoint_check(kind="openai", url=f"{LISTENER}/v1")
    endpoint_check(kind="anthropic", url="https://proxy.corp:443/anthropic")
    for other in ("http://127.0.0.1:8766", "https://127.0.0.1:8765"):
        with pytest.raises(EndpointRefused):
            endpoint_check(kind="openai", url=other)


@pytest.fixture
def admin_client(client, world):
    client.force_login(world.admin)
    return client


@pytest.fixture
def openai_source() -> BillingSource:
    source = BillingSource(name="OpenAI org", kind="openai", config={})
    source.credentials = {"api_key": API_KEY}
    source.save()
    return source


def admin_save(client, source: BillingSource, config: str, **fields: str):
    url = reverse("admin:billing_billingsource_change", args=[source.pk])
    data = {
        "name": source.name,
        "kind": source.kind,
        "is_enabled": "on",
        "config": config,
        "sync_every_minutes": "360",
        **fields,
    }
    return client.post(url, data, follow=True)


def test_saving_an_endpoint_of_another_host_is_refused_with_the_reason(
    admin_client, openai_source, settings
):
    settings.SOURCE_ENDPOINT_ALLOWLIST = []
    response = admin_save(admin_client, openai_source, f'{{"base_url": "{LISTENER}"}}')
    errors = response.context["adminform"].form.errors["config"]
    assert errors == [
        f"base_url: {LISTENER} is not an address of the provider (api.openai.com "
        "over https): credentials are only sent there, or to an address an operator "
        "lists in SOURCE_ENDPOINT_ALLOWLIST."
    ]
    openai_source.refresh_from_db()
    assert openai_source.config == {}
    assert openai_source.credentials == {"api_key": API_KEY}


def test_changing_the_endpoint_clears_the_credentials_and_says_so(
    admin_client, openai_source, settings
):
    settings.SOURCE_ENDPOINT_ALLOWLIST = [LISTENER]
    response = admin_save(admin_client, openai_source, f'{{"base_url": "{LISTENER}"}}')
    assert response.status_code == 200
    openai_source.refresh_from_db()
    assert openai_source.config == {"base_url": LISTENER}
    assert openai_source.credentials_token == ""
    shown = [str(message) for message in response.context["messages"]]
    assert (
        "The source's endpoint or kind changed, so its stored credentials were "
        "removed: enter them again for the new endpoint." in shown
    )


def test_changing_the_kind_clears_the_credentials(admin_client, openai_source):
    openai_source.kind = "anthropic"  # what the form posts
    admin_save(admin_client, openai_source, "{}")
    openai_source.refresh_from_db()
    assert openai_source.kind == "anthropic"
    assert openai_source.credentials_token == ""


def test_credentials_entered_with_the_new_endpoint_are_kept(
    admin_client, openai_source, settings
):
    settings.SOURCE_ENDPOINT_ALLOWLIST = [LISTENER]
    admin_save(
        admin_client,
        openai_source,
        f'{{"base_url": "{LISTENER}"}}',
        new_credentials='{"api_key": "sk-admin-for-the-proxy-0000"}',
    )
    openai_source.refresh_from_db()
    assert openai_source.credentials == {"api_key": "sk-admin-for-the-proxy-0000"}


def test_saving_other_settings_keeps_the_credentials(admin_client, openai_source):
    admin_save(admin_client, openai_source, '{"organization": "org-1"}')
    openai_source.refresh_from_db()
    assert openai_source.config == {"organization": "org-1"}
    assert openai_source.credentials == {"api_key": API_KEY}


def test_an_s3_endpoint_of_another_host_fails_before_any_request(settings):
    settings.SOURCE_ENDPOINT_ALLOWLIST = []
    source = BillingSource(
        name="AWS payer",
        kind="aws-cur",
        config={"bucket": "b", "export": "e", "endpoint_url": LISTENER},
    )
    source.credentials = {"access_key_id": "AKIA0000", "secret_access_key": "s" * 40}
    source.save()
    with pytest.raises(ImportFailure, match="is not an address of the provider"):
        S3Bucket(source)


def test_an_azure_connection_string_naming_another_host_fails_before_any_request(
    settings,
):
    settings.SOURCE_ENDPOINT_ALLOWLIST = []
    source = BillingSource(name="Azure EA", kind="azure", config={"container": "c"})
    source.credentials = {
        "connection_string": "DefaultEndpointsProtocol=http;AccountName=acme;"
        f"AccountKey=a2V5;BlobEndpoint={LISTENER}/acme;"
    }
    source.save()
    with pytest.raises(ImportFailure, match=f"{LISTENER} is not an address"):
        blob_service(source)


class RedirectingStore(ThreadingHTTPServer):
    """A store that sends every request on to another host (here: itself, named
    `localhost`), and keeps the paths it was asked."""

    requests: list[str]


class RedirectingHandler(BaseHTTPRequestHandler):
    server: RedirectingStore

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        port = self.server.server_address[1]
        self.send_response(302)
        self.send_header("Location", f"http://localhost:{port}{self.path}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def redirecting_store(monkeypatch, settings) -> Iterator[RedirectingStore]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    server = RedirectingStore(("127.0.0.1", 0), RedirectingHandler)
    server.requests = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings.SOURCE_ENDPOINT_ALLOWLIST = [f"http://127.0.0.1:{server.server_port}"]
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_blob_storage_redirects_are_not_followed(redirecting_store):
    source = BillingSource(
        name="Azure EA",
        kind="azure",
        config={
            "account_url": f"http://127.0.0.1:{redirecting_store.server_port}/acme",
            "container": "exports",
            "exports": ["acme-actual"],
        },
    )
    source.credentials = {"sas_token": "sv=2024&sig=tests-only"}
    source.save()
    outcome = billing_sync_source(source_id=source.pk)
    assert outcome.run.status == ImportRun.Status.FAILED
    assert "Blob Storage refused the request (302)" in outcome.run.error
    assert len(redirecting_store.requests) == 1
