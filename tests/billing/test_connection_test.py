"""Testing a source's connection from its page: a queued task asks the provider (the
local fakes of the fetcher tests) for the first page a sync would fetch, imports
nothing, and the page says per step what worked or failed, with the HTTP status."""

import pytest
import time_machine
from django.urls import reverse

from accounts.models import User
from billing.connection import connection_test_queue
from billing.models import BillingSource, CostRecord, ImportRun
from tests.billing.fakes import fake_provider_fixture
from tests.billing.test_fetchers_anthropic import API_KEY as ANTHROPIC_KEY
from tests.billing.test_fetchers_anthropic import FakeAnthropic
from tests.billing.test_fetchers_openai import API_KEY, NOW, FakeOpenAI
from tests.conftest import make_user, wait_for

fake_openai = fake_provider_fixture(FakeOpenAI)
fake_anthropic = fake_provider_fixture(FakeAnthropic)


def openai_source(url: str, key: str = API_KEY) -> BillingSource:
    source = BillingSource(name="OpenAI org", kind="openai", config={"base_url": url})
    source.credentials = {"api_key": key}
    source.save()
    return source


def test_connection(client, source, capture) -> str:
    """Posts the test as an admin, runs the queued task, and gives the page."""
    with capture(execute=True):
        queued = client.post(reverse("source_test", args=[source.pk]))
    assert queued.status_code == 302
    response = client.get(reverse("source_detail", args=[source.pk]))
    return response.content.decode()


test_connection.__test__ = False  # a helper, not a test


@pytest.fixture
def admin(client, world, eager_tasks):
    client.force_login(world.admin)
    return client


@time_machine.travel(NOW, tick=False)
@pytest.mark.django_db
def test_a_working_connection_says_each_step_worked_and_imports_nothing(
    admin, fake_openai, django_capture_on_commit_callbacks
):
    source = openai_source(fake_openai.url)
    runs, records = ImportRun.objects.count(), CostRecord.objects.count()
    page = test_connection(admin, source, django_capture_on_commit_callbacks)
    source.refresh_from_db()
    assert source.connection_test["ok"] is True
    assert [step["ok"] for step in source.connection_test["steps"]] == [True] * 3
    assert "The provider accepted them (HTTP 200)." in page
    assert "Cost data since 1 September 2026 was found." in page
    assert len(fake_openai.requests) == 1  # one page, never the next
    assert (ImportRun.objects.count(), CostRecord.objects.count()) == (runs, records)


@time_machine.travel(NOW, tick=False)
@pytest.mark.django_db
def test_a_refused_key_is_said_in_plain_words_with_the_status(
    admin, fake_openai, django_capture_on_commit_callbacks
):
    source = openai_source(fake_openai.url, key="sk-admin-wrong-key-000000000")
    page = test_connection(admin, source, django_capture_on_commit_callbacks)
    source.refresh_from_db()
    credentials, permissions, data = source.connection_test["steps"]
    assert credentials == {
        "step": "credentials",
        "ok": False,
        "text": "OpenAI: the API key was refused (HTTP 401): check that it is an "
        "admin key of the organisation and still valid.",
    }
    assert permissions["ok"] is data["ok"] is None
    assert credentials["text"] in page
    # Never what the provider answered, which repeats the key.
    assert "Incorrect API key" not in page
    assert "sk-admin-wrong-key" not in page


@time_machine.travel(NOW, tick=False)
@pytest.mark.django_db
def test_a_key_without_the_right_is_a_permissions_failure(
    admin, fake_anthropic, django_capture_on_commit_callbacks
):
    fake_anthropic.fail(403)
    source = BillingSource(
        name="Anthropic", kind="anthropic", config={"base_url": fake_anthropic.url}
    )
    source.credentials = {"api_key": ANTHROPIC_KEY}
    source.save()
    test_connection(admin, source, django_capture_on_commit_callbacks)
    source.refresh_from_db()
    credentials, permissions, data = source.connection_test["steps"]
    assert credentials["ok"] is True
    assert permissions["ok"] is False
    assert "(HTTP 403)" in permissions["text"]
    assert data["ok"] is None


@pytest.mark.django_db
def test_an_upload_source_has_no_test_button(admin, world):
    world.source.kind = "focus"
    world.source.save()
    page = admin.get(reverse("source_detail", args=[world.source.pk]))
    assert "Test the connection" not in page.content.decode()
    response = admin.post(reverse("source_test", args=[world.source.pk]), follow=True)
    assert "has no connection to test" in response.content.decode()


@time_machine.travel(NOW, tick=False)
@pytest.mark.django_db
def test_a_queued_test_says_testing_and_then_that_no_worker_took_it(admin):
    source = openai_source("https://api.openai.com")
    connection_test_queue(source=source)  # no commit in this test: never sent
    page = admin.get(reverse("source_detail", args=[source.pk])).content.decode()
    assert "Testing…" in page
    with time_machine.travel(NOW.replace(minute=11), tick=False):
        page = admin.get(reverse("source_detail", args=[source.pk])).content.decode()
    assert "did not run: no worker took it" in page


@pytest.mark.parametrize("persona", ["lead", "member", "outsider", "finance"], ids=str)
@pytest.mark.django_db
def test_only_admins_may_test_a_connection(client, world, persona):
    client.force_login(getattr(world, persona))
    response = client.post(reverse("source_test", args=[world.source.pk]))
    assert response.status_code == 403
    world.source.refresh_from_db()
    assert world.source.connection_test == {}


def test_a_worker_runs_the_test(client, worker, fake_openai):
    with time_machine.travel(NOW, tick=True):
        source = openai_source(fake_openai.url)
        client.force_login(make_user("root@test.example", role=User.Role.ADMIN))
        client.post(reverse("source_test", args=[source.pk]))
        assert wait_for(
            lambda: (
                "checked_at" in BillingSource.objects.get(pk=source.pk).connection_test
            )
        ), "the worker did not test the connection"
    source.refresh_from_db()
    assert source.connection_test["ok"] is True
