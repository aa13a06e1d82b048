"""Guessing passwords is throttled: logins (portal and admin) per account and per
address, with a cool-off that ends; password reset requests per address and per email;
the API per user, with 429 and Retry-After, and 401 for a missing or invalid token."""

from datetime import UTC, datetime, timedelta

import pytest
from django.core import mail
from django.core.cache import cache
from django.urls import reverse

from accounts.throttles import UserRateThrottle, client_address
from projects.tokens import api_token_create
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

START = datetime(2026, 3, 2, 9, tzinfo=UTC)
HOME = "192.0.2.10"  # documentation addresses (RFC 5737)
ELSEWHERE = "198.51.100.20"


@pytest.fixture
def clock(time_machine):
    time_machine.move_to(START, tick=False)
    return time_machine


@pytest.fixture(autouse=True)
def fresh_cache():
    """Throttles count in the shared cache; each test starts with none counted."""
    cache.clear()
    yield
    cache.clear()


def log_in(client, email: str, password: str, address: str = HOME, url: str = ""):
    return client.post(
        url or reverse("login"),
        {"username": email, "password": password},
        REMOTE_ADDR=address,
    )


def fail_logins(client, email: str, times: int, address: str = HOME) -> list[int]:
    return [log_in(client, email, "wrong", address).status_code for _ in range(times)]


def is_locked_out(response) -> bool:
    return response.status_code == 429 and "Too many failed logins" in (
        response.content.decode()
    )


# Logins


def test_an_account_is_paused_after_the_failure_limit_from_any_address(
    client, world, settings, clock
):
    limit = settings.AXES_FAILURE_LIMIT
    assert fail_logins(client, world.lead.email, limit - 1) == [200] * (limit - 1)
    assert log_in(client, world.lead.email, PASSWORD).status_code == 302
    client.logout()  # a success forgets the failures before it
    assert fail_logins(client, world.lead.email, limit) == [200] * (limit - 1) + [429]

    response = log_in(client, world.lead.email, PASSWORD, ELSEWHERE)

    assert is_locked_out(response)
    assert "_auth_user_id" not in client.session
    assert log_in(client, world.member.email, PASSWORD, ELSEWHERE).status_code == 302


def test_an_address_is_paused_after_the_failure_limit_on_any_accounts(
    client, world, settings, clock
):
    for n in range(settings.AXES_FAILURE_LIMIT):
        log_in(client, f"guess-{n}@test.example", "wrong")

    assert is_locked_out(log_in(client, world.lead.email, PASSWORD))
    assert log_in(client, world.lead.email, PASSWORD, ELSEWHERE).status_code == 302


def test_the_lockout_page_is_the_portals_and_says_how_long(client, world, settings):
    fail_logins(client, world.lead.email, settings.AXES_FAILURE_LIMIT)

    response = log_in(client, world.lead.email, PASSWORD)

    assert is_locked_out(response)
    assert "auth_base.html" in [t.name for t in response.templates]
    text = response.content.decode()
    assert f"After {settings.AXES_FAILURE_LIMIT} failed logins" in text
    assert f"paused for {settings.LOGIN_COOLOFF_MINUTES} minutes" in text


def test_the_cool_off_ends_even_while_someone_keeps_guessing(
    client, world, settings, clock
):
    fail_logins(client, world.lead.email, settings.AXES_FAILURE_LIMIT)
    cool_off = timedelta(minutes=settings.LOGIN_COOLOFF_MINUTES)

    clock.move_to(START + cool_off - timedelta(minutes=1), tick=False)
    assert is_locked_out(log_in(client, world.lead.email, "still guessing"))
    assert is_locked_out(log_in(client, world.lead.email, PASSWORD))

    clock.move_to(START + cool_off + timedelta(seconds=1), tick=False)
    assert log_in(client, world.lead.email, PASSWORD).status_code == 302


def test_the_admin_login_is_throttled_with_the_portals(client, world, settings, clock):
    admin_login = reverse("admin:login")
    fail_logins(client, world.admin.email, settings.AXES_FAILURE_LIMIT)

    response = log_in(client, world.admin.email, PASSWORD, url=admin_login)

    assert is_locked_out(response)


@pytest.fixture
def behind_proxy(settings):
    """DJANGO_BEHIND_TLS_PROXY=true: one proxy, whose address every request has."""
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}


def test_behind_the_proxy_a_client_is_the_address_the_proxy_appended(rf, behind_proxy):
    claimed = rf.get(
        "/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="6.6.6.6, " + HOME
    )

    assert client_address(claimed) == HOME


def test_behind_the_proxy_one_clients_failures_do_not_pause_the_others(
    client, world, settings, clock, behind_proxy
):
    def via_proxy(email, password, address):
        return client.post(
            reverse("login"),
            {"username": email, "password": password},
            REMOTE_ADDR="10.0.0.2",
            HTTP_X_FORWARDED_FOR=address,
        )

    for n in range(settings.AXES_FAILURE_LIMIT):
        via_proxy(f"guess-{n}@test.example", "wrong", HOME)

    assert is_locked_out(via_proxy(world.lead.email, PASSWORD, HOME))
    assert via_proxy(world.lead.email, PASSWORD, ELSEWHERE).status_code == 302


# Password reset


def ask_reset(client, email: str, address: str = HOME):
    return client.post(reverse("password_reset"), {"email": email}, REMOTE_ADDR=address)


def test_password_reset_is_limited_per_email_with_a_clear_message(
    client, world, settings, clock
):
    settings.PASSWORD_RESET_RATE = "2/hour"
    assert ask_reset(client, world.lead.email).status_code == 302
    assert ask_reset(client, world.lead.email, ELSEWHERE).status_code == 302

    refused = ask_reset(client, world.lead.email, "203.0.113.30")

    assert refused.status_code == 429
    assert "Too many password reset requests" in refused.content.decode()
    assert "Try again in 60 minutes" in refused.content.decode()
    assert len(mail.outbox) == 2
    clock.move_to(START + timedelta(hours=1, seconds=1), tick=False)
    assert ask_reset(client, world.lead.email, "203.0.113.30").status_code == 302
    assert len(mail.outbox) == 3


def test_password_reset_is_limited_per_address_whatever_the_email(
    client, world, settings, clock
):
    settings.PASSWORD_RESET_RATE = "2/hour"
    assert ask_reset(client, "nobody@test.example").status_code == 302
    assert ask_reset(client, world.member.email).status_code == 302

    assert ask_reset(client, world.lead.email).status_code == 429
    assert ask_reset(client, world.lead.email, ELSEWHERE).status_code == 302


# The API


def api_get(client, **headers):
    return client.get(reverse("api_project_list"), headers=headers)


def test_a_missing_or_invalid_token_is_401_with_a_bearer_challenge(client, world):
    for response in (api_get(client), api_get(client, authorization="Bearer nonsense")):
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_the_api_answers_429_with_retry_after_beyond_each_tokens_rate(
    client, world, clock, monkeypatch
):
    monkeypatch.setattr(UserRateThrottle, "THROTTLE_RATES", {"user": "3/minute"})
    _, key = api_token_create(user=world.lead, name="script", expires_in_days=30)
    auth = {"authorization": f"Bearer {key}"}
    assert [api_get(client, **auth).status_code for _ in range(3)] == [200] * 3

    refused = api_get(client, **auth)

    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "60"
    _, other_key = api_token_create(user=world.lead, name="other", expires_in_days=30)
    # Each token counts on its own: the owner's other token is not held back.
    assert api_get(client, authorization=f"Bearer {other_key}").status_code == 200
    client.force_login(world.member)  # another user counts on their own
    assert api_get(client).status_code == 200
    clock.move_to(START + timedelta(minutes=1, seconds=1), tick=False)
    assert api_get(client, **auth).status_code == 200


def test_the_api_rate_is_the_one_configured(settings):
    assert (
        UserRateThrottle().rate
        == settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["user"]
    )


def test_with_the_cache_down_the_api_and_password_reset_still_answer(
    client, world, queue_down
):
    _, key = api_token_create(user=world.lead, name="script", expires_in_days=30)

    assert api_get(client, authorization=f"Bearer {key}").status_code == 200
    assert ask_reset(client, world.lead.email).status_code == 302
