"""Misconfiguration stops start-up with a system check that names the variable."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_check(*options: str, **env: str) -> subprocess.CompletedProcess:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "EMAIL_", "REPORTING_", "DATABASE_"))
    }
    return subprocess.run(
        [sys.executable, "manage.py", "check", *options],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_complete_configuration_passes_the_checks():
    result = run_check(DJANGO_SECRET_KEY="s" * 50, DJANGO_ALLOWED_HOSTS="example.com")
    assert result.returncode == 0, result.stderr


PRODUCTION = {
    "DJANGO_SECRET_KEY": "tests-only-Qm9yZWFsLXByb2R1Y3Rpb24ta2V5LWlzLWxvbmc-x7",
    "DJANGO_ALLOWED_HOSTS": "spend.example.com",
}


def test_production_settings_pass_the_deployment_checks_without_a_warning():
    # HSTS, the HTTPS redirect and secure cookies are on by default without debug.
    result = run_check("--deploy", "--fail-level", "WARNING", **PRODUCTION)

    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize(
    ("env", "warned"),
    [
        ({"DJANGO_SECURE_SSL_REDIRECT": "false"}, "security.W008"),
        ({"DJANGO_SECURE_HSTS_SECONDS": "0"}, "security.W004"),
        ({"DJANGO_SECURE_COOKIES": "false"}, "security.W012"),
    ],
)
def test_a_tls_proxy_may_switch_off_each_protection_and_the_check_says_so(env, warned):
    result = run_check("--deploy", "--fail-level", "WARNING", **PRODUCTION, **env)

    assert result.returncode != 0
    assert warned in result.stderr


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({}, "DJANGO_SECRET_KEY: must be set when DJANGO_DEBUG is off"),
        ({"DJANGO_DEBUG": "maybe"}, "DJANGO_DEBUG must be true or false"),
        (
            {"DJANGO_DEBUG": "true", "REPORTING_CURRENCY": "DOLLARS"},
            "REPORTING_CURRENCY",
        ),
        ({"DJANGO_DEBUG": "true", "DATABASE_URL": "nonsense://x"}, "DATABASE_URL"),
        ({"DJANGO_DEBUG": "true", "EMAIL_PORT": "twenty-five"}, "EMAIL_PORT"),
        (
            {"DJANGO_DEBUG": "true", "EMAIL_GIVE_UP_AFTER_HOURS": "0"},
            "EMAIL_GIVE_UP_AFTER_HOURS must be a whole number above zero, got 0",
        ),
        (
            {"DJANGO_DEBUG": "true", "CELERY_TASK_TIME_LIMIT": "0"},
            "CELERY_TASK_TIME_LIMIT must be a whole number above zero, got 0",
        ),
        (
            {"DJANGO_DEBUG": "true", "UPLOAD_MAX_MB": "0"},
            "UPLOAD_MAX_MB must be a whole number above zero, got 0",
        ),
        (
            {"DJANGO_DEBUG": "true", "IMPORT_MAX_DECOMPRESSED_MB": "lots"},
            "IMPORT_MAX_DECOMPRESSED_MB",
        ),
        (
            {"DJANGO_DEBUG": "true", "EMAIL_GIVE_UP_AFTER_HOURS": "a day"},
            "EMAIL_GIVE_UP_AFTER_HOURS",
        ),
        (
            {"DJANGO_SECRET_KEY": "s" * 50, "FIELD_ENCRYPTION_KEY": ""},
            "FIELD_ENCRYPTION_KEY: must be set when DJANGO_DEBUG is off",
        ),
        (
            {"DJANGO_DEBUG": "true", "SOURCE_ENDPOINT_ALLOWLIST": "proxy.corp"},
            "SOURCE_ENDPOINT_ALLOWLIST: 'proxy.corp' is not an address",
        ),
        (
            {"DJANGO_DEBUG": "true", "FIELD_ENCRYPTION_KEY": "short"},
            "FIELD_ENCRYPTION_KEY: is not a Fernet key",
        ),
        (
            {
                "DJANGO_DEBUG": "true",
                # while rotating: the new key, then the old one, here mistyped
                "FIELD_ENCRYPTION_KEY": "dGVzdHMtb25seS1rZXktMzItYnl0ZXMtbG9uZyEhISE="
                ",x",
            },
            "FIELD_ENCRYPTION_KEY: is not a Fernet key",
        ),
        (
            {"DJANGO_DEBUG": "true", "CHARGEBACK_DEFAULT_COST_CENTRE": "C" * 51},
            "CHARGEBACK_DEFAULT_COST_CENTRE must be one code of at most 50",
        ),
        (
            {"DJANGO_DEBUG": "true", "PASSWORD_RESET_RATE": "5 an hour"},
            "PASSWORD_RESET_RATE must be a count per second, minute, hour or day",
        ),
        ({"DJANGO_DEBUG": "true", "API_RATE": "0/minute"}, "API_RATE must be a count"),
        (
            {"DJANGO_DEBUG": "true", "SESSION_IDLE_TIMEOUT": "0"},
            "SESSION_IDLE_TIMEOUT must be a whole number above zero, got 0",
        ),
        (
            {"DJANGO_DEBUG": "true", "LOGIN_COOLOFF_MINUTES": "0"},
            "LOGIN_COOLOFF_MINUTES must be a whole number above zero, got 0",
        ),
        (
            {"DJANGO_DEBUG": "true", "MONTHLY_REPORT_SCHEDULE": "0 8 3 *"},
            "MONTHLY_REPORT_SCHEDULE: must be five cron fields",
        ),
        (
            {"DJANGO_DEBUG": "true", "MONTHLY_REPORT_SCHEDULE": "0 25 3 * *"},
            "MONTHLY_REPORT_SCHEDULE: '0 25 3 * *' is not a schedule",
        ),
    ],
)
def test_a_missing_or_bad_variable_is_named_by_a_system_check(env, named):
    result = run_check(**env)
    assert result.returncode != 0
    assert "spendtracker.E001" in result.stderr
    assert named in result.stderr


def test_in_development_a_missing_encryption_key_is_a_warning():
    """`make run` starts without one; only storing credentials needs it."""
    result = run_check(DJANGO_DEBUG="true", FIELD_ENCRYPTION_KEY="")
    assert result.returncode == 0, result.stderr
    assert "spendtracker.W001" in result.stderr
    assert "FIELD_ENCRYPTION_KEY is not set" in result.stderr


def test_the_task_time_limit_sets_the_soft_limit_and_the_visibility_timeout():
    """Kill at the limit, record the failure 5 minutes before (a tenth when short),
    and redeliver an unacknowledged message only after twice the limit."""
    shown = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "shell",
            "-c",
            "from django.conf import settings as s; print(s.CELERY_TASK_TIME_LIMIT,"
            " s.CELERY_TASK_SOFT_TIME_LIMIT,"
            " s.CELERY_BROKER_TRANSPORT_OPTIONS['visibility_timeout'])",
        ],
        cwd=ROOT,
        env={
            **os.environ,
            "DJANGO_DEBUG": "true",
            "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",  # read, never connected
            "CELERY_TASK_TIME_LIMIT": "7200",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    last = shown.stdout.splitlines()[-1]  # after what the shell imported
    assert last.split() == ["7200", "6900", "14400"], shown.stderr
