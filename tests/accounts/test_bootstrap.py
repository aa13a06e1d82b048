"""`manage.py bootstrap` on an empty database: the first admin and the organisation's
name, nothing else; a second run is refused and changes nothing."""

from io import StringIO

import pytest
from django.apps import apps
from django.core.management import CommandError, call_command

from accounts.management.commands import bootstrap
from accounts.models import Organisation, User

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery-staple"


class Terminal(StringIO):
    """Standard input that says it is a terminal, as createsuperuser's tests do."""

    def isatty(self) -> bool:
        return True


def run(
    *, stdin=None, stderr=None, organisation="Acme AI", email="Root@Acme.example"
) -> str:
    out = StringIO()
    extra = {"stdin": stdin} if stdin is not None else {}
    call_command(
        "bootstrap",
        "--organisation",
        organisation,
        "--admin-email",
        email,
        stdout=out,
        stderr=stderr or StringIO(),
        **extra,
    )
    return out.getvalue()


OUR_APPS = {"accounts", "projects", "billing", "budgets", "reports"}


def rows_of_every_model() -> dict[str, int]:
    """Rows of every model of the project's apps (Django's own content types and
    permissions are made by every migrate)."""
    return {
        model._meta.label: model.objects.count()
        for model in apps.get_models()
        if model._meta.app_label in OUR_APPS and model.objects.exists()
    }


def test_bootstrap_with_the_env_password_creates_the_admin_and_nothing_else(
    monkeypatch,
):
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", PASSWORD)
    assert rows_of_every_model() == {}, "the test starts from an empty database"
    printed = run()
    admin = User.objects.get()
    assert (admin.email, admin.role, admin.is_superuser) == (
        "root@acme.example",
        User.Role.ADMIN,
        True,
    )
    assert admin.check_password(PASSWORD)
    assert Organisation.objects.get().name == "Acme AI"
    assert rows_of_every_model() == {
        "accounts.User": 1,
        "accounts.Organisation": 1,
    }
    assert "Acme AI is set up; root@acme.example is its admin" in printed


def test_bootstrap_asks_for_the_password_twice_in_a_terminal(monkeypatch):
    monkeypatch.delenv("DJANGO_SUPERUSER_PASSWORD", raising=False)
    answers = iter(["short", "short", PASSWORD, "typo", PASSWORD, PASSWORD])
    monkeypatch.setattr(bootstrap.getpass, "getpass", lambda prompt: next(answers))
    errors = StringIO()
    run(stdin=Terminal(), stderr=errors)
    assert User.objects.get().check_password(PASSWORD)
    assert "too short" in errors.getvalue()
    assert "The two passwords differ" in errors.getvalue()
    assert next(answers, None) is None, "asked until two matching good answers"


def test_bootstrap_without_a_password_or_a_terminal_refuses(monkeypatch):
    monkeypatch.delenv("DJANGO_SUPERUSER_PASSWORD", raising=False)
    with pytest.raises(CommandError, match="set DJANGO_SUPERUSER_PASSWORD"):
        run(stdin=StringIO())
    assert not User.objects.exists()
    assert not Organisation.objects.exists()


def test_a_second_bootstrap_is_refused_and_changes_nothing(monkeypatch):
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", PASSWORD)
    run()
    before = rows_of_every_model()
    with pytest.raises(CommandError, match=r"already set up: root@acme\.example"):
        run(organisation="Other", email="second@acme.example")
    assert rows_of_every_model() == before
    assert Organisation.objects.get().name == "Acme AI"
    assert not User.objects.filter(email="second@acme.example").exists()


def test_a_weak_env_password_is_refused_with_the_validators_words(monkeypatch):
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "1234")
    with pytest.raises(CommandError, match="too short"):
        run()
    assert not User.objects.exists()
