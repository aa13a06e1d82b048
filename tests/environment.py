"""Loaded with `-p` before Django starts: what the test run needs from the environment.

The one settings file reads only the environment, so tests set what a deployment would,
and leave DATABASE_URL and CELERY_BROKER_URL to the caller (CI points them at
PostgreSQL and Redis).
"""

import os

os.environ.setdefault("DJANGO_SECRET_KEY", "tests-only-secret-key-not-for-production")
os.environ.setdefault("DJANGO_DEBUG", "false")
os.environ.setdefault("DJANGO_ALLOWED_HOSTS", "testserver,127.0.0.1,localhost")
os.environ.setdefault("REPORTING_CURRENCY", "USD")
# The test client and the live server speak plain HTTP, like a deployment behind a TLS
# proxy that redirects by itself; tests/test_settings.py checks the redirect's default.
os.environ.setdefault("DJANGO_SECURE_SSL_REDIRECT", "false")
# Without a broker given (CI gives Redis), the worker tests use Celery's in-memory
# transport: a real worker in this process, and no folder shared with other runs.
os.environ.setdefault("CELERY_BROKER_URL", "memory://")
# A fixed test key; production keys come from the environment only.
os.environ.setdefault(
    "FIELD_ENCRYPTION_KEY", "dGVzdHMtb25seS1rZXktMzItYnl0ZXMtbG9uZyEhISE="
)
