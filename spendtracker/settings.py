"""Spendtracker settings, read from the environment only.

Every variable is listed in `.env.example`. A missing or malformed value does not crash
the import: it is recorded in CONFIG_ERRORS and reported by the `spendtracker.E001`
system check, which names the variable (see spendtracker/checks.py).
"""

import re
from datetime import timedelta
from pathlib import Path

import environ
from celery.schedules import ParseException, crontab
from django.core.exceptions import ImproperlyConfigured

from core.currencies import ISO_4217_CODES

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
CONFIG_ERRORS: list[tuple[str, str]] = []


def _read(name: str, parse, default):
    """Parse one variable; on a bad value keep the default and remember the error."""
    try:
        return parse(name, default=default)
    except (ImproperlyConfigured, ValueError) as exc:
        CONFIG_ERRORS.append((name, str(exc)))
        return default


def _strict_bool(name: str, default: bool) -> bool:
    raw = env.str(name, default="").strip().lower()
    if raw == "":
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"{name} must be true or false, got {raw!r}")


def _positive_int(name: str, default: int) -> int:
    value = env.int(name, default=default)
    if value < 1:
        raise ValueError(f"{name} must be a whole number above zero, got {value}")
    return value


def _rate(name: str, default: str) -> str:
    """A request rate as Django REST framework reads it: a count per second, minute,
    hour or day, e.g. 5/hour."""
    rate = env.str(name, default=default).strip()
    count, _, period = rate.partition("/")
    if not (count.isdigit() and int(count) > 0 and period in _RATE_PERIODS):
        raise ValueError(
            f"{name} must be a count per second, minute, hour or day, "
            f"e.g. 5/hour; got {rate!r}"
        )
    return rate


_RATE_PERIODS = {"second", "minute", "hour", "day"}

DEBUG = _read("DJANGO_DEBUG", _strict_bool, False)

# Production has no default secret: the E001 check stops start-up when it is missing.
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
if not SECRET_KEY:
    if DEBUG:
        SECRET_KEY = "django-insecure-dev-only-key-never-used-in-production"
    else:
        CONFIG_ERRORS.append(
            ("DJANGO_SECRET_KEY", "must be set when DJANGO_DEBUG is off")
        )
        SECRET_KEY = "unset"

ALLOWED_HOSTS = _read(
    "DJANGO_ALLOWED_HOSTS", env.list, ["127.0.0.1", "localhost"] if DEBUG else []
)
CSRF_TRUSTED_ORIGINS = _read("DJANGO_CSRF_TRUSTED_ORIGINS", env.list, [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "axes",
    "csp",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "spendtracker",
    "core",
    "accounts",
    "projects",
    "budgets",
    "billing",
    "reports",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "core.audit.AuditMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "spendtracker.urls"
WSGI_APPLICATION = "spendtracker.wsgi.application"
ASGI_APPLICATION = "spendtracker.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "spendtracker.context_processors.portal",
            ],
        },
    },
]


def _database_url(name: str, default: str) -> dict:
    url = env.str(name, default=default)
    scheme = url.split("://", 1)[0]
    if scheme not in environ.Env.DB_SCHEMES:
        raise ValueError(f"unknown database scheme {scheme!r} in {url!r}")
    return env.db_url_config(url)


_SQLITE_URL = f"sqlite:///{BASE_DIR / 'db.sqlite3'}"
DATABASES = {"default": _read("DATABASE_URL", _database_url, _SQLITE_URL)}
if isinstance(DATABASES["default"], str):  # a bad value was rejected above
    DATABASES["default"] = env.db_url_config(_SQLITE_URL)
DATABASES["default"]["CONN_MAX_AGE"] = _read("DJANGO_CONN_MAX_AGE", env.int, 0)
# No wait for a lock is endless, and a session stalled inside a transaction (a stopped
# worker) loses it, and its locks, before anyone waiting for them gives up.
DATABASE_LOCK_WAIT_SECONDS = _read("DATABASE_LOCK_WAIT_SECONDS", _positive_int, 600)
DATABASE_IDLE_IN_TRANSACTION_SECONDS = _read(
    "DATABASE_IDLE_IN_TRANSACTION_SECONDS", _positive_int, 300
)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"].setdefault("OPTIONS", {})["options"] = (
        f"-c lock_timeout={DATABASE_LOCK_WAIT_SECONDS}s -c "
        f"idle_in_transaction_session_timeout={DATABASE_IDLE_IN_TRANSACTION_SECONDS}s"
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "accounts.User"
# AxesBackend first: it refuses a locked-out login before any password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": f"django.contrib.auth.password_validation.{name}"}
    for name in (
        "UserAttributeSimilarityValidator",
        "MinimumLengthValidator",
        "CommonPasswordValidator",
        "NumericPasswordValidator",
    )
]

# Login throttling (django-axes), for the portal's and the admin's login alike: after
# LOGIN_FAILURE_LIMIT failed logins for one account, or from one address, that account
# or address is refused for LOGIN_COOLOFF_MINUTES. Failures during the cool-off do not
# extend it, so nobody can keep a user locked out for good; an admin can lift a lockout
# sooner (admin: Axes, Access attempts).
AXES_FAILURE_LIMIT = _read("LOGIN_FAILURE_LIMIT", _positive_int, 5)
LOGIN_COOLOFF_MINUTES = _read("LOGIN_COOLOFF_MINUTES", _positive_int, 15)
AXES_COOLOFF_TIME = timedelta(minutes=LOGIN_COOLOFF_MINUTES)
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
# The login forms' field (the email); axes would look for USERNAME_FIELD, "email".
AXES_USERNAME_FORM_FIELD = "username"
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
# The address a request came from, the same for login throttling as for the API's
# (accounts/throttles.py); NUM_PROXIES in REST_FRAMEWORK says which one that is.
AXES_CLIENT_IP_CALLABLE = "accounts.throttles.client_address"
# Password reset requests, per address and per email (accounts/throttles.py).
PASSWORD_RESET_RATE = _read("PASSWORD_RESET_RATE", _rate, "5/hour")

# Idle session timeout: a session ends this many minutes after its last request.
SESSION_IDLE_TIMEOUT = _read("SESSION_IDLE_TIMEOUT", _positive_int, 60)
SESSION_COOKIE_AGE = SESSION_IDLE_TIMEOUT * 60
SESSION_SAVE_EVERY_REQUEST = True

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
# Uploaded billing exports, kept with their ImportRun; web and worker must share it.
MEDIA_ROOT = Path(_read("DJANGO_MEDIA_ROOT", env.str, str(BASE_DIR / "media")))
MEDIA_URL = "media/"  # never served: uploads are read by the worker only
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024  # larger uploads spool to disk
DATA_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
# The most an upload (all its files together) may weigh: a larger one is refused by
# the form and nothing of it is kept.
UPLOAD_MAX_MB = _read("UPLOAD_MAX_MB", _positive_int, 2048)
FILE_UPLOAD_HANDLERS = [
    "billing.forms.UploadLimitHandler",  # skips the files of a heavier request
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]
# The most an import reads of one compressed file (gzip, a zip's member) once
# decompressed: a few kilobytes of gzip can expand without end.
IMPORT_MAX_DECOMPRESSED_MB = _read("IMPORT_MAX_DECOMPRESSED_MB", _positive_int, 20480)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# Money: one reporting currency per deployment; FX rates convert into it.
REPORTING_CURRENCY = _read("REPORTING_CURRENCY", env.str, "USD").upper()
if REPORTING_CURRENCY not in ISO_4217_CODES:
    CONFIG_ERRORS.append(
        ("REPORTING_CURRENCY", f"{REPORTING_CURRENCY!r} is not an ISO 4217 code")
    )
    REPORTING_CURRENCY = "USD"


def _ledger_code(name: str, default: str) -> str:
    """A cost centre or GL account as the ledger knows it: one short code."""
    code = env.str(name, default=default).strip()
    if len(code) > 50 or not code.isprintable():
        raise ValueError(f"{name} must be one code of at most 50 characters")
    return code


# Chargeback: the journal posts spend of no project (unallocated) here; each team's
# own cost centre and GL account are set on the team.
CHARGEBACK_DEFAULT_COST_CENTRE = _read(
    "CHARGEBACK_DEFAULT_COST_CENTRE", _ledger_code, ""
)
CHARGEBACK_DEFAULT_GL_ACCOUNT = _read("CHARGEBACK_DEFAULT_GL_ACCOUNT", _ledger_code, "")

# Fernet key for billing-source credentials (billing ingestion).
FIELD_ENCRYPTION_KEY = env.str("FIELD_ENCRYPTION_KEY", default="")


def _endpoint_allowlist(name: str, default: list[str]) -> list[str]:
    """Addresses besides the providers' own that sources may send credentials to
    (a proxy, a local store): scheme, host and port, e.g. https://proxy.corp:8443."""
    entries = env.list(name, default=default)
    for entry in entries:
        if not re.fullmatch(r"https?://[^/@\s:]+(:\d{1,5})?/?", entry):
            raise ValueError(
                f"{name}: {entry!r} is not an address like https://proxy.corp:8443"
            )
    return entries


SOURCE_ENDPOINT_ALLOWLIST = _read("SOURCE_ENDPOINT_ALLOWLIST", _endpoint_allowlist, [])

# Email
EMAIL_BACKEND = _read(
    "EMAIL_BACKEND",
    env.str,
    "django.core.mail.backends.console.EmailBackend"
    if DEBUG
    else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_HOST = _read("EMAIL_HOST", env.str, "localhost")
EMAIL_PORT = _read("EMAIL_PORT", env.int, 25)
EMAIL_HOST_USER = _read("EMAIL_HOST_USER", env.str, "")
EMAIL_HOST_PASSWORD = _read("EMAIL_HOST_PASSWORD", env.str, "")
EMAIL_USE_TLS = _read("EMAIL_USE_TLS", _strict_bool, False)
# Seconds before a hung mail server gives up; well under the 10-minute claim of an
# email (core.delivery.LEASE), so a stuck send is never sent twice.
EMAIL_TIMEOUT = _read("EMAIL_TIMEOUT", env.int, 60)
# Hours an email may stay owed (the mail server unreachable, or refusing it) before it
# is given up and listed in admin for a retry (core.delivery).
EMAIL_GIVE_UP_AFTER_HOURS = _read("EMAIL_GIVE_UP_AFTER_HOURS", _positive_int, 24)
EMAIL_FILE_PATH = _read("EMAIL_FILE_PATH", env.str, str(BASE_DIR / ".run" / "mail"))
DEFAULT_FROM_EMAIL = _read(
    "DEFAULT_FROM_EMAIL", env.str, "Spendtracker <spendtracker@localhost>"
)
SERVER_EMAIL = DEFAULT_FROM_EMAIL
# Absolute links in emails (password reset, alerts) use this origin.
SITE_URL = _read("SITE_URL", env.str, "http://127.0.0.1:8000").rstrip("/")
# Webhooks post alerts to public https addresses; these origins (scheme://host:port)
# are allowed besides, e.g. a chat server inside the network.
WEBHOOK_ALLOWLIST = _read("WEBHOOK_ALLOWLIST", env.list, [])
WEBHOOK_TIMEOUT = _read("WEBHOOK_TIMEOUT", _positive_int, 10)

# Celery: with no broker configured (make run), a filesystem broker needs no service.
CELERY_BROKER_URL = _read("CELERY_BROKER_URL", env.str, "filesystem://")
if CELERY_BROKER_URL == "filesystem://":
    _broker_dir = BASE_DIR / ".run" / "broker"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir),
        "data_folder_out": str(_broker_dir),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
    }
    # The transport expects its folders; creating them here keeps every entry point
    # (runserver, shell, worker) working on a fresh checkout.
    for _folder in ("processed", "control"):
        (_broker_dir / _folder).mkdir(parents=True, exist_ok=True)
# The longest a task may run before its worker kills it; the sweep marks an import run
# still running this long after it started as stopped (billing.tasks).
CELERY_TASK_TIME_LIMIT = _read("CELERY_TASK_TIME_LIMIT", _positive_int, 60 * 60)
# Time to record the failure before the hard kill: five minutes, or a tenth when short.
CELERY_TASK_SOFT_TIME_LIMIT = CELERY_TASK_TIME_LIMIT - min(
    5 * 60, max(1, CELERY_TASK_TIME_LIMIT // 10)
)
if CELERY_BROKER_URL != "filesystem://":
    # Above the longest task, so a late-acked task is not redelivered while it runs.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 2 * CELERY_TASK_TIME_LIMIT}
# The cache carries import progress from the worker to the portal, so it must be shared
# between processes: Redis beside a Redis broker, files on one machine otherwise.
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": CELERY_BROKER_URL,
            # Progress and delivery counts are best effort: an unreachable Redis
            # costs a request or an import a second or two, never a hang.
            "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(BASE_DIR / ".run" / "cache"),
        }
    }


def _schedule(text: str) -> crontab:
    minute, hour, day_of_month, month_of_year, day_of_week = text.split()
    return crontab(minute, hour, day_of_week, day_of_month, month_of_year)


def _cron_text(name: str, default: str) -> str:
    """Five cron fields (minute, hour, day of month, month, day of week), in UTC."""
    text = " ".join(env.str(name, default="").split()) or default
    if len(text.split()) != 5:
        raise ValueError(
            "must be five cron fields (minute hour day-of-month month day-of-week), "
            f"e.g. {default!r}; got {text!r}"
        )
    try:
        _schedule(text)
    except (ValueError, ParseException) as exc:
        raise ValueError(f"{text!r} is not a schedule: {exc}") from exc
    return text


# When the previous month's report is emailed to finance, as cron fields in UTC: by
# default the 3rd at 08:00, once providers have delivered most of the month.
MONTHLY_REPORT_SCHEDULE = _read("MONTHLY_REPORT_SCHEDULE", _cron_text, "0 8 3 * *")
CELERY_TASK_IGNORE_RESULT = True
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TIMEZONE = "UTC"
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = _read("CELERY_TASK_ALWAYS_EAGER", _strict_bool, False)
# Imports, syncs and rollup rebuilds, which may take most of an hour, have a queue and
# workers of their own (docker-compose.yml: import-worker), so that however many are
# waiting, alert emails, report checks and PDFs on the default queue never wait
# behind them. Every queue named here needs a worker that consumes it.
CELERY_TASK_DEFAULT_QUEUE = "celery"
IMPORTS_QUEUE = "imports"
CELERY_TASK_ROUTES = {
    f"billing.tasks.{name}": {"queue": IMPORTS_QUEUE}
    for name in (
        "import_upload",
        "billing_sync",
        # Only queues billing_sync; beside them, it waits while imports are busy
        # instead of queueing the same sources again every 15 minutes.
        "billing_sync_due",
        "compute_invoices_load_task",
        "daily_costs_rebuild_recent",
        "rollup_rebuild_for_rates",
        # Rebuilds the rollup where a new project's rule takes unallocated costs.
        "unallocated_costs_allocate_task",
    )
} | {
    # Runs' estimates rebuild the rollup of their days.
    f"budgets.tasks.{name}": {"queue": IMPORTS_QUEUE}
    for name in ("run_estimates_restate_task", "run_estimates_restate_after_import")
}
CELERY_BEAT_SCHEDULE = {
    "beat-heartbeat": {
        # /healthz reports how long ago this last ran: beat and a worker are alive.
        "task": "core.tasks.beat_heartbeat",
        "schedule": crontab(),
        "options": {"expires": 50},
    },
    "sweep-import-runs": {
        # Runs whose worker stopped, and uploads waiting for the queue to come back;
        # on the default queue, so it never waits behind the imports it looks for.
        "task": "billing.tasks.import_runs_sweep_task",
        "schedule": crontab(minute="*/5"),
        "options": {"expires": 4 * 60},
    },
    "send-unsent-tasks": {
        # Tasks that committed changes queued while the broker was down.
        "task": "core.tasks.unsent_tasks_send",
        "schedule": crontab(minute="*/5"),
        "options": {"expires": 4 * 60},
    },
    "billing-sync-due": {
        # Each source has its own interval; this only looks for the ones that are due.
        "task": "billing.tasks.billing_sync_due",
        "schedule": crontab(minute="*/15"),
        "options": {"expires": 14 * 60},
    },
    "load-compute-invoices": {
        # Invoice changes are restated as they happen; this catches any that a
        # stopped worker missed.
        "task": "billing.tasks.compute_invoices_load_task",
        "schedule": crontab(minute=45, hour=1),
        "options": {"expires": 23 * 60 * 60},
    },
    "rebuild-recent-daily-costs": {
        # Cheap safety net: the rollup of the last days is rebuilt nightly so that any
        # change made outside the importers (admin edits, FX rates) reaches the portal.
        "task": "billing.tasks.daily_costs_rebuild_recent",
        "schedule": crontab(minute=15, hour=2),
        "options": {"expires": 23 * 60 * 60},
    },
    "evaluate-alerts": {
        # Imports trigger an evaluation too; the hourly one catches time passing
        # (burn-rate forecasts, stale sources, a new month).
        "task": "budgets.tasks.alerts_evaluate_task",
        "schedule": crontab(minute=5),
        "options": {"expires": 55 * 60},
    },
    "send-alert-emails": {
        # Emails are sent right after each evaluation; this resends any that a
        # stopped worker left owed.
        "task": "budgets.tasks.notifications_send",
        "schedule": crontab(minute="*/5"),
        "options": {"expires": 4 * 60},
    },
    "send-webhooks": {
        # Alert messages to Slack and JSON webhooks that a down endpoint left owed.
        "task": "budgets.tasks.webhooks_send",
        "schedule": crontab(minute="*/5"),
        "options": {"expires": 4 * 60},
    },
    "send-alert-digests": {
        "task": "budgets.tasks.digests_send_task",
        "schedule": crontab(minute=0, hour=7),
        "options": {"expires": 23 * 60 * 60},
    },
    "email-monthly-report": {
        # Records one email per finance user for the previous month, then sends them.
        "task": "reports.tasks.monthly_report_email_task",
        "schedule": _schedule(MONTHLY_REPORT_SCHEDULE),
        "options": {"expires": 23 * 60 * 60},
    },
    "send-report-emails": {
        # Sends the monthly report emails a stopped worker or a refusing mail server
        # left owed.
        "task": "reports.tasks.report_emails_send_task",
        "schedule": crontab(minute=35),
        "options": {"expires": 55 * 60},
    },
}

# Behind a proxy, the address of a request is the last one of X-Forwarded-For, which
# the proxy appended, for the API's throttles and login throttling alike.
BEHIND_TLS_PROXY = _read("DJANGO_BEHIND_TLS_PROXY", _strict_bool, False)
REST_FRAMEWORK = {
    # Tokens first: a request without credentials is answered 401 with
    # `WWW-Authenticate: Bearer`. The portal's own calls use the session, with CSRF.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "projects.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.IsAuthenticated",
        "projects.authentication.TokenScope",
    ],
    # Over the rate: 429 with Retry-After. Every endpoint needs a user (a token or a
    # session), refused with 401 before any throttle: each token counts on its own,
    # a session per user.
    "DEFAULT_THROTTLE_CLASSES": ["projects.throttles.ApiRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"user": _read("API_RATE", _rate, "600/minute")},
    "NUM_PROXIES": 1 if BEHIND_TLS_PROXY else 0,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "core.pagination.PagePagination",
    "PAGE_SIZE": 50,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Spendtracker API",
    "DESCRIPTION": "Plan vs actual spend of AI projects.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    # Swagger UI served from the sidecar package: no CDN at run time.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # Choice sets whose field names collide across models get names of their own.
    "ENUM_NAME_OVERRIDES": {
        "ProjectKindEnum": "projects.models.Project.Kind",
        "ProjectStatusEnum": "projects.models.Project.Status",
        "RunStatusEnum": "projects.models.TrainingRun.Status",
        "ProgressUnitEnum": "projects.models.TrainingRun.ProgressUnit",
        "SourceKindEnum": "billing.models.BillingSource.Kind",
        "ImportStatusEnum": "billing.models.ImportRun.Status",
        "InvoiceStatusEnum": "billing.models.ComputeInvoice.Status",
        "RunEventKindEnum": "budgets.models.RunEvent.Kind",
    },
}

if not DEBUG:
    SESSION_COOKIE_SECURE = _read("DJANGO_SECURE_COOKIES", _strict_bool, True)
    CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
    # Plain HTTP is redirected to HTTPS, and browsers told to use nothing else; a TLS
    # proxy that redirects by itself may turn the redirect off.
    SECURE_SSL_REDIRECT = _read("DJANGO_SECURE_SSL_REDIRECT", _strict_bool, True)
    SECURE_HSTS_SECONDS = _read("DJANGO_SECURE_HSTS_SECONDS", env.int, 365 * 86400)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_PRELOAD = SECURE_HSTS_SECONDS > 0
    # Trust X-Forwarded-Proto only behind a TLS proxy that sets it; otherwise any client
    # could claim its plain-HTTP request was secure.
    if BEHIND_TLS_PROXY:
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# The /healthz probe of the container calls plain HTTP on 127.0.0.1: never redirected.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]

# Content-Security-Policy (django-csp): the portal's own scripts, styles, fonts and
# images only; no inline script or style anywhere, no framing, forms post to the portal.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": "INFO"},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # WeasyPrint narrates each PDF at INFO and warns of every portal style it
        # does not print (shadows, cursors); fontTools narrates font subsetting.
        "weasyprint": {"level": "ERROR"},
        "fontTools": {"level": "WARNING"},
        # django-axes narrates every login at INFO; failures and lockouts are warnings.
        "axes": {"level": "WARNING"},
    },
}
