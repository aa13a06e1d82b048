"""billing_sync: fetched sources load like files, retry on provider failure, and say
`unchanged` when the provider sends the same data again.

The fetcher here stands in for a provider's API at the boundary: it is what a real
fetcher module yields, and the real ones are tested against local fake servers.
"""

import io
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.urls import reverse

from billing import sync
from billing.importers.base import ProviderError, new_row
from billing.models import BillingSource, CostRecord, ImportRun
from billing.tasks import billing_sync_due
from tests.billing import importing
from tests.billing.importing import sync_json

pytestmark = pytest.mark.django_db


class ScriptedFetcher:
    kind = "openai"
    responses: list = []

    def fetch(self, *, source, since):
        response = self.responses.pop(0)
        if isinstance(response, Exception):
            raise response
        for day, amount in response:
            start = datetime(2026, 10, day, tzinfo=UTC)
            yield new_row() | {
                "billing_account_id": "org-1",
                "provider_name": "OpenAI",
                "billing_currency": "USD",
                "charge_category": "Usage",
                "billing_period_start": datetime(2026, 10, 1, tzinfo=UTC),
                "billing_period_end": datetime(2026, 11, 1, tzinfo=UTC),
                "charge_period_start": start,
                "charge_period_end": start + timedelta(days=1),
                **dict.fromkeys(
                    ("billed_cost", "effective_cost", "list_cost", "contracted_cost"),
                    Decimal(amount),
                ),
            }


@pytest.fixture(autouse=True)
def october(time_machine):
    """The scripted provider bills October 2026; the sync window follows the clock."""
    time_machine.move_to(datetime(2026, 10, 20, 12, tzinfo=UTC))


@pytest.fixture
def source(monkeypatch):
    monkeypatch.setitem(sync.FETCHERS, "openai", ScriptedFetcher)
    ScriptedFetcher.responses = []
    return BillingSource.objects.create(name="OpenAI org", kind="openai")


def test_a_sync_loads_what_the_provider_sends(source):
    ScriptedFetcher.responses = [[(1, "1.25"), (2, "2.50")]]
    result = sync_json()["sources"][0]
    assert (result["status"], result["rows"]) == ("imported", 2)
    assert result["billed"] == {"USD": "3.75"}
    assert CostRecord.objects.count() == 2


def test_the_same_data_twice_is_unchanged_and_loads_nothing_new(source):
    ScriptedFetcher.responses = [[(1, "1.25")], [(1, "1.25")]]
    sync_json()
    ids = list(CostRecord.objects.values_list("pk", flat=True))
    result = sync_json()["sources"][0]
    assert result["status"] == "unchanged"
    assert list(CostRecord.objects.values_list("pk", flat=True)) == ids


def test_restated_data_replaces_the_period(source):
    ScriptedFetcher.responses = [[(1, "1.25"), (2, "2.50")], [(1, "1.30")]]
    sync_json()
    result = sync_json()["sources"][0]
    assert result["status"] == "imported"
    assert list(CostRecord.objects.values_list("billed_cost", flat=True)) == [
        Decimal("1.30")
    ]


def test_a_provider_outage_fails_the_run_and_keeps_the_data(source):
    ScriptedFetcher.responses = [[(1, "1.25")], ProviderError("503 from API")]
    sync_json()
    with pytest.raises(CommandError):
        call_command("billing_sync", stdout=io.StringIO())
    assert CostRecord.objects.count() == 1
    source.refresh_from_db()
    assert "503 from API" in source.last_error
    assert ImportRun.objects.latest("pk").status == ImportRun.Status.FAILED


def test_a_file_only_source_cannot_be_synced(source):
    BillingSource.objects.create(name="FOCUS files", kind="focus")
    with pytest.raises(CommandError, match="import its files with billing_import"):
        call_command("billing_sync", source="FOCUS files", stdout=io.StringIO())


def test_only_sources_whose_interval_has_passed_are_due(source, monkeypatch):
    queued = []
    monkeypatch.setattr("billing.tasks.billing_sync.delay", queued.append)
    fresh = BillingSource.objects.create(
        name="fresh", kind="openai", last_sync_at=datetime.now(UTC)
    )
    BillingSource.objects.filter(pk=source.pk).update(
        last_sync_at=datetime.now(UTC) - timedelta(hours=7)
    )
    assert billing_sync_due() == 1
    assert queued == [source.pk]
    assert fresh.pk not in queued


def test_credentials_are_stored_encrypted_and_shown_masked(source):
    source.credentials = {"api_key": "sk-admin-1234567890abcdef"}
    source.save()
    stored = BillingSource.objects.values_list("credentials_token", flat=True).get()
    assert "sk-admin" not in stored
    source.refresh_from_db()
    assert source.credentials == {"api_key": "sk-admin-1234567890abcdef"}
    assert source.masked_credentials == {"api_key": "…cdef"}


def test_credentials_move_to_a_new_key_while_the_old_one_still_reads_them(
    source, settings
):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEY = old
    source.credentials = {"api_key": "sk-admin-1234567890abcdef"}
    source.save()
    settings.FIELD_ENCRYPTION_KEY = f"{new}, {old}"
    source.refresh_from_db()
    assert source.credentials == {"api_key": "sk-admin-1234567890abcdef"}
    out = io.StringIO()
    call_command("rotate_encryption_key", stdout=out)
    assert out.getvalue() == (
        f"Encrypted the credentials of 1 sources with the first key: {source.name}. "
        "Keys after the first can now be removed from FIELD_ENCRYPTION_KEY.\n"
    )
    settings.FIELD_ENCRYPTION_KEY = new
    source.refresh_from_db()
    assert source.credentials == {"api_key": "sk-admin-1234567890abcdef"}


def test_rotating_without_the_key_that_encrypted_them_changes_nothing(source, settings):
    source.credentials = {"api_key": "sk-admin-1234567890abcdef"}
    source.save()
    token = source.credentials_token
    settings.FIELD_ENCRYPTION_KEY = Fernet.generate_key().decode()
    with pytest.raises(CommandError, match="list the new key first and the old one"):
        call_command("rotate_encryption_key")
    source.refresh_from_db()
    assert source.credentials_token == token


def test_the_same_rows_in_another_order_are_unchanged(source):
    ScriptedFetcher.responses = [[(1, "1.25"), (2, "2.50")], [(2, "2.50"), (1, "1.25")]]
    sync_json()
    assert sync_json()["sources"][0]["status"] == "unchanged"


def test_a_quiet_month_empties_what_the_provider_no_longer_reports(source):
    ScriptedFetcher.responses = [[(1, "1.25")], []]
    sync_json()
    result = sync_json()["sources"][0]
    assert result["status"] == "imported"
    assert not CostRecord.objects.exists()


def test_an_admin_sets_credentials_that_are_stored_encrypted(client, world):
    client.force_login(world.admin)
    url = reverse("admin:billing_billingsource_change", args=[world.source.pk])
    form = client.get(url).context["adminform"].form
    data = {
        name: value
        for name, value in form.initial.items()
        if value is not None and name != "config"
    }
    data |= {
        "config": "{}",
        "new_credentials": '{"api_key": "sk-admin-1234567890abcdef"}',
        "sync_every_minutes": "360",
    }
    response = client.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    world.source.refresh_from_db()
    assert world.source.credentials == {"api_key": "sk-admin-1234567890abcdef"}
    assert "1234567890" not in client.get(url).content.decode()


def lockable_elsewhere(source_id: int) -> bool:
    """Whether another connection (another worker, an import) can lock the source's
    row right now, without waiting."""
    locked = []

    def lock() -> None:
        try:
            with transaction.atomic():
                BillingSource.objects.select_for_update(nowait=True).get(pk=source_id)
            locked.append(True)
        except DatabaseError:
            locked.append(False)
        finally:
            connection.close()

    other = threading.Thread(target=lock)
    other.start()
    other.join()
    return locked[0]


class WatchedFetcher(ScriptedFetcher):
    """A provider that notes, while it is being read, what the sync holds."""

    seen: dict[str, bool] = {}

    def fetch(self, *, source, since):
        for row in super().fetch(source=source, since=since):
            WatchedFetcher.seen = {
                "in_transaction": connection.in_atomic_block,
                "source_lockable": lockable_elsewhere(source.pk),
            }
            yield row


@pytest.mark.django_db(transaction=True)
def test_the_provider_is_read_before_the_import_locks_the_source(monkeypatch):
    monkeypatch.setitem(sync.FETCHERS, "openai", WatchedFetcher)
    WatchedFetcher.responses = [[(1, "1.25"), (2, "2.50")]]
    source = BillingSource.objects.create(name="OpenAI org", kind="openai")
    result = importing.sync(source)
    assert (result["status"], result["rows"]) == ("imported", 2)
    assert WatchedFetcher.seen == {"in_transaction": False, "source_lockable": True}


def test_a_sync_says_what_it_replaced(source):
    ScriptedFetcher.responses = [[(1, "1.25"), (2, "2.50")], [(1, "1.30")]]
    sync_json()
    result = sync_json()["sources"][0]
    # As stored: to the 11 places CostRecord keeps.
    assert result["replaced"] == {
        "rows": 2,
        "billed": {"USD": "3.75000000000"},
        "effective": {"USD": "3.75000000000"},
    }
    assert result["warnings"] == []


def test_a_sync_that_empties_a_period_warns_in_money(source):
    ScriptedFetcher.responses = [[(1, "1.25")], []]
    sync_json()
    out = io.StringIO()
    call_command("billing_sync", stdout=out)
    assert out.getvalue().splitlines()[1] == (
        "OpenAI org: warning: removed 1 row of billing account org-1 for 2026-10 "
        "that this import does not replace (the account is not in this import): "
        "billed 1.25000000000 USD, effective 1.25000000000 USD"
    )


@pytest.mark.parametrize(
    ("secret", "shown"),
    [
        ("sk-admin-1234567890abcdef", "…cdef"),
        ("abcdefghijkl", "…ijkl"),
        ("short-secret", "…cret"),
        ("eleven-char", "••••"),  # too short to show any of it
        ("x", "••••"),
    ],
)
def test_a_mask_shows_at_most_the_last_four_characters(source, secret, shown):
    source.credentials = {"api_key": secret}
    assert source.masked_credentials == {"api_key": shown}


def test_credentials_no_key_reads_fail_the_sync_with_a_clear_message(settings):
    # The real fetcher: it reads the credentials before it sends anything.
    source = BillingSource(name="OpenAI org", kind="openai")
    source.credentials = {"api_key": "sk-admin-1234567890abcdef"}
    source.save()
    settings.FIELD_ENCRYPTION_KEY = Fernet.generate_key().decode()
    importing.failed_sync(source)
    run = ImportRun.objects.latest("pk")
    assert run.status == ImportRun.Status.FAILED
    assert run.error == (
        f"{source.name}: Stored credentials cannot be decrypted: FIELD_ENCRYPTION_KEY "
        "has changed (while rotating, list the new key first and the old one after "
        "it). Enter its credentials again."
    )


def test_a_database_error_fails_the_sync_with_a_plain_message(source, caplog):
    raw = 'duplicate key value violates unique constraint "billing_costrecord_pkey"'
    ScriptedFetcher.responses = [IntegrityError(raw)]
    importing.failed_sync(source)
    run = ImportRun.objects.latest("pk")
    source.refresh_from_db()
    assert run.status == ImportRun.Status.FAILED
    assert (
        run.error
        == source.last_error
        == (
            "OpenAI org: the import stopped on a database error, and nothing of it was "
            "loaded. The details are in the log, under import run "
            f"{run.pk}."
        )
    )
    assert raw in caplog.text
