"""Writes of accounts: setting up a fresh install."""

from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction

from accounts.models import Organisation, User


class BootstrapRefused(Exception):
    """A fresh install cannot be set up as asked; the message says why."""


def organisation_admin_exists() -> User | None:
    return User.objects.filter(role=User.Role.ADMIN).order_by("pk").first()


def bootstrap_check(*, name: str, admin_email: str) -> str:
    """Everything that refuses a bootstrap before a password is asked for; the
    admin's email as it will be stored."""
    if not name.strip():
        raise BootstrapRefused("The organisation needs a name (--organisation).")
    email = User.objects.normalize_email(admin_email.strip()).lower()
    try:
        validate_email(email)
    except ValidationError as error:
        raise BootstrapRefused(f"{admin_email!r} is not an email address.") from error
    admin = organisation_admin_exists()
    if admin is not None:
        raise BootstrapRefused(
            f"This install is already set up: {admin.email} is an admin. Nothing "
            "was changed. Add people in Django admin (/admin/) instead."
        )
    if User.objects.filter(email__iexact=email).exists():
        raise BootstrapRefused(
            f"{email} already has a login; nothing was changed. Make them an admin "
            "in Django admin, or bootstrap with another address."
        )
    return email


def bootstrap_password_check(*, email: str, password: str) -> None:
    """Django's password validators, as `createsuperuser` applies them."""
    if not password:
        raise BootstrapRefused("The password is empty.")
    try:
        validate_password(password, User(email=email))
    except ValidationError as error:
        raise BootstrapRefused(" ".join(error.messages)) from error


@transaction.atomic
def organisation_bootstrap(*, name: str, admin_email: str, password: str) -> User:
    """Name the organisation and create its first admin, and nothing else: no team,
    project, source or demo data. Refused once an admin exists."""
    email = bootstrap_check(name=name, admin_email=admin_email)
    bootstrap_password_check(email=email, password=password)
    # Serialise two bootstraps at once: the second waits here, then finds the admin.
    Organisation.objects.select_for_update().filter(pk=1).first()
    Organisation.objects.update_or_create(pk=1, defaults={"name": name.strip()})
    if organisation_admin_exists() is not None:
        raise BootstrapRefused("Another bootstrap created the admin meanwhile.")
    return User.objects.create_superuser(email=email, password=password)
