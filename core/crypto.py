"""Secrets at rest: billing-source credentials are Fernet tokens.

The keys are FIELD_ENCRYPTION_KEY, from the environment only: one key, or several
separated by commas while a key is rotated. The first encrypts; any of them decrypts.
"""

import json

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

UNREADABLE = (
    "Stored credentials cannot be decrypted: FIELD_ENCRYPTION_KEY has changed "
    "(while rotating, list the new key first and the old one after it)."
)
NO_KEY = "FIELD_ENCRYPTION_KEY is not set: it is needed to store credentials."
# What a page shows in place of credentials that no key reads.
UNREADABLE_SHORT = "credentials unreadable, enter them again"
MASK_SHOWS = 4  # characters at the end of a secret


class CredentialsUnreadable(ImproperlyConfigured):
    """No key of FIELD_ENCRYPTION_KEY decrypts the stored credentials, or none is
    set."""


def field_keys(value: str) -> list[str]:
    return [key.strip() for key in value.split(",") if key.strip()]


def _fernet() -> MultiFernet:
    keys = field_keys(settings.FIELD_ENCRYPTION_KEY)
    if not keys:
        raise CredentialsUnreadable(NO_KEY)
    return MultiFernet([Fernet(key) for key in keys])


def encrypt_json(value: dict) -> str:
    return _fernet().encrypt(json.dumps(value).encode()).decode()


def rotated(token: str) -> str:
    """The token encrypted again with the first key."""
    try:
        return _fernet().rotate(token.encode()).decode()
    except InvalidToken:
        raise CredentialsUnreadable(UNREADABLE) from None


def decrypt_json(token: str) -> dict:
    if not token:
        return {}
    try:
        return json.loads(_fernet().decrypt(token.encode()))
    except InvalidToken:
        raise CredentialsUnreadable(UNREADABLE) from None


def keys_set() -> bool:
    return bool(field_keys(settings.FIELD_ENCRYPTION_KEY))


def mask(secret: str) -> str:
    """Enough of a secret to recognise it, never enough to use it: its last four
    characters, and only of a secret three times as long; never its length."""
    if len(secret) < 3 * MASK_SHOWS:
        return "••••"
    return f"…{secret[-MASK_SHOWS:]}"
