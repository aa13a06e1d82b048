import os
import socket
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from unittest import mock

import pytest
from celery.contrib.testing.worker import start_worker
from django.conf import settings

from accounts.models import Membership, Team, User
from billing.models import (
    COST_COLUMNS,
    BillingSource,
    ComputeInvoice,
    ComputeInvoiceLine,
    CostRecord,
    ImportRun,
)
from billing.services import daily_costs_rebuild
from budgets.models import Alert, AlertKind, Budget, BudgetLine, BudgetRevision
from budgets.services import plan_snapshot
from projects.models import Project, TrainingRun
from spendtracker.celery import app
from tests.smtp_servers import SmtpServer

PASSWORD = "correct-horse-battery"
SKIPPED: list[str] = []


def pytest_runtest_logreport(report):
    if report.skipped:
        SKIPPED.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    """In CI a skipped test is a failure: nothing may be silently left out."""
    if os.environ.get("CI") and SKIPPED:
        print(f"\nCI runs every test, but these were skipped: {SKIPPED}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True)
def test_settings(settings):
    """The manifest storage of production needs collectstatic; tests serve plain files.
    A fast hasher keeps the personas cheap to build."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {
            "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        },
    }


@pytest.fixture
def eager_tasks():
    """Celery tasks run in this process when queued; tests about tasks themselves run
    a real worker instead (billing/test_tasks.py, budgets/test_alert_workers.py)."""
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False


def _broker_connections_forget() -> None:
    """Drop the app's pooled broker connections, so the next send connects to the
    broker the environment names now."""
    app._pool = None
    app.amqp._producer_pool = None


class QueueDown:
    """Redis unreachable, as when it is stopped: the broker and the cache point at a
    local port where nothing listens (the machine's shared Redis is left alone),
    until back()."""

    def __init__(self, settings) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.url = f"redis://127.0.0.1:{port}/0"
        self.settings, self.caches = settings, settings.CACHES
        self.environment = mock.patch.dict(os.environ, {"CELERY_BROKER_URL": self.url})
        settings.CACHES = {
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": self.url,
                "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
            }
        }
        self.environment.start()
        _broker_connections_forget()

    def back(self) -> None:
        if self.settings.CACHES is not self.caches:
            self.settings.CACHES = self.caches
            self.environment.stop()
            _broker_connections_forget()


@pytest.fixture
def queue_down(settings):
    down = QueueDown(settings)
    yield down
    down.back()


@dataclass
class World:
    """Named personas around one team's project, and an outsider in another team."""

    team: Team
    other_team: Team
    lead: User
    member: User
    outsider: User
    finance: User
    admin: User
    project: Project
    other_project: Project
    invoice: ComputeInvoice
    source: BillingSource
    import_run: ImportRun
    run: TrainingRun
    alert: Alert
    revision: BudgetRevision


def make_user(email: str, role: str = User.Role.STANDARD, **extra) -> User:
    return User.objects.create_user(email=email, password=PASSWORD, role=role, **extra)


def make_project(team: Team, owner: User, slug: str, **extra) -> Project:
    defaults = {
        "name": slug.replace("-", " ").title(),
        "kind": Project.Kind.FINE_TUNING,
        "start_date": date(2026, 1, 1),
        "end_date": date(2026, 12, 31),
    }
    return Project.objects.create(
        team=team, owner=owner, slug=slug, **{**defaults, **extra}
    )


def make_budget(project: Project, months: dict[date, str], **extra) -> Budget:
    total = sum((Decimal(amount) for amount in months.values()), Decimal("0"))
    fields = {
        "total": total,
        "currency": "USD",
        "start_date": project.start_date,
        "end_date": project.end_date,
        **extra,
    }
    budget = Budget.objects.create(project=project, **fields)
    for month, amount in months.items():
        BudgetLine.objects.create(budget=budget, month=month, amount=Decimal(amount))
    return budget


def make_run(project: Project, **overrides) -> TrainingRun:
    """A planned run of 8 H100s over January 2026; a test overrides what it measures."""
    fields = {
        "name": "SFT run",
        "external_id": "sft-run",
        "gpu_type": "H100",
        "gpu_count": 8,
        "planned_gpu_hours": Decimal("500"),
        "rate_per_gpu_hour": Decimal("2.99"),
        "start_date": date(2026, 1, 1),
        "end_date": date(2026, 1, 31),
        **overrides,
    }
    return TrainingRun.objects.create(project=project, **fields)


def make_cost_record(day: date, amount: str, **fields) -> CostRecord:
    """One day's FOCUS cost line; all four cost measures equal `amount`."""
    start = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
    source, _ = BillingSource.objects.get_or_create(
        name="Test export", defaults={"kind": BillingSource.Kind.FOCUS}
    )
    values = {
        "source": source,
        "billing_account_id": "111",
        "billing_period_start": start.replace(day=1),
        "billing_period_end": start.replace(day=1) + timedelta(days=32),
        "charge_period_start": start,
        "charge_period_end": start + timedelta(days=1),
        "charge_category": "Usage",
        "billing_currency": "USD",
        "provider_name": "AWS",
        "service_name": "Amazon EC2",
        **{measure: Decimal(amount) for measure in COST_COLUMNS},
        **fields,
    }
    return CostRecord.objects.create(**values)


def make_spend(project: Project | None, day: date, amount: str, **fields) -> None:
    """Spend allocated to a project (None: unallocated), rolled up as imports do."""
    make_cost_record(day, amount, project=project, **fields)
    daily_costs_rebuild(start=day, end=day + timedelta(days=1))


@pytest.fixture
def world(db) -> World:
    team = Team.objects.create(name="Foundation", slug="foundation")
    other_team = Team.objects.create(name="Other", slug="other")
    lead = make_user("lead@test.example", full_name="Lena Lead")
    member = make_user("member@test.example")
    outsider = make_user("outsider@test.example")
    finance = make_user("finance@test.example", role=User.Role.FINANCE)
    admin = make_user("admin@test.example", role=User.Role.ADMIN)
    Membership.objects.create(user=lead, team=team, role=Membership.Role.LEAD)
    Membership.objects.create(user=member, team=team, role=Membership.Role.MEMBER)
    Membership.objects.create(user=outsider, team=other_team, role=Membership.Role.LEAD)
    project = make_project(team, lead, "llama-sft")
    make_budget(project, {date(2026, 1, 1): "1000.00", date(2026, 2, 1): "2000.00"})
    other_project = make_project(other_team, outsider, "secret-pretrain")
    invoice = ComputeInvoice.objects.create(
        vendor="Lambda",
        invoice_number="INV-1",
        issued_on=date(2026, 2, 3),
        period_start=date(2026, 1, 1),
        period_end=date(2026, 1, 31),
        currency="USD",
        project=project,
    )
    ComputeInvoiceLine.objects.create(
        invoice=invoice, description="H100 hours", amount=Decimal("1234.5000")
    )
    source = BillingSource.objects.create(name="AWS export", kind="focus")
    import_run = ImportRun.objects.create(source=source, file_name="cur.csv")
    run = make_run(project)
    alert = Alert.objects.create(
        kind=AlertKind.BUDGET_USED,
        scope_key=f"project:{project.pk}",
        period=date(2026, 1, 1),
        threshold=Decimal("80"),
        project=project,
        severity=Alert.Severity.WARNING,
        subject="Llama Sft: $850 spent, 85% of the January plan",
        reason="Project Llama Sft has spent $850 in January 2026",
        value=Decimal("85"),
        fired_at=datetime(2026, 1, 20, 9, tzinfo=UTC),
    )
    approved = plan_snapshot(budget=project.budget, lines=project.budget.lines.all())
    revision = BudgetRevision.objects.create(
        budget=project.budget,
        proposal={**approved, "total": "3500.00"},
        previous=approved,
        proposed_by=lead,
    )
    return World(
        team=team,
        other_team=other_team,
        lead=lead,
        member=member,
        outsider=outsider,
        finance=finance,
        admin=admin,
        project=project,
        other_project=other_project,
        invoice=invoice,
        source=source,
        import_run=import_run,
        run=run,
        alert=alert,
        revision=revision,
    )


@pytest.fixture
def mail_server(settings):
    """A real SMTP server on loopback that Django's SMTP backend sends to; it starts
    down (its port closed: connections refused) until the test starts it."""
    server = SmtpServer()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = server.port
    settings.EMAIL_TIMEOUT = 5
    yield server
    server.stop()


@pytest.fixture
def worker(transactional_db):
    """One worker on both queues, as `make run` has it: these tasks go to the imports
    queue (settings.CELERY_TASK_ROUTES)."""
    # Earlier tests' imports queue evaluations on the default queue, and uploads on
    # the imports queue, which only this worker consumes: it must not run them
    # against this test's data. Only those queues are purged, never the database.
    queues = [settings.CELERY_TASK_DEFAULT_QUEUE, settings.IMPORTS_QUEUE]
    with app.connection_for_write() as broker:
        for queue in queues:
            broker.default_channel.queue_purge(queue)
    with start_worker(
        app, pool="solo", perform_ping_check=False, shutdown_timeout=10, queues=queues
    ):
        yield


def wait_for(condition, timeout: float = 60.0) -> bool:
    """True once `condition()` is, polled every 0.2 s; False after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False
