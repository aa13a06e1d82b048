"""The audit log: each kind of change is recorded where it happens, by whom and from
where, without secrets; finance and admins read it, nobody edits it."""

from datetime import UTC, date, datetime

import pytest
from django.contrib.admin.sites import site
from django.test import RequestFactory
from django.urls import reverse

from billing.models import BillingSource
from billing.services import billing_source_delete, cost_records_reallocate
from budgets.services import budget_revision_decide
from core.models import AuditEvent
from projects.models import ApiToken
from reports.closing import month_close, month_reopen
from tests.billing.test_views import finance_client, upload  # noqa: F401
from tests.budgets.test_forms import plan_post
from tests.conftest import PASSWORD, make_cost_record
from tests.data import FOCUS_REAL

pytestmark = pytest.mark.django_db

Kind = AuditEvent.Kind


def events(kind: str) -> list[tuple[str, str]]:
    """(who, what) of each event of a kind, oldest first."""
    rows = AuditEvent.objects.filter(kind=kind).order_by("at", "id")
    return list(rows.values_list("actor_name", "action"))


def test_a_draft_saved_then_approved_is_recorded_with_who_did_each(client, world):
    client.force_login(world.lead)
    plan = reverse("budget_edit", args=[world.project.slug])
    data = plan_post(
        world.project.budget, [("2026-01", "1000.00"), ("2026-02", "2000.00")]
    )
    assert client.post(plan, data).status_code == 302
    client.force_login(world.finance)
    client.post(reverse("budget_approve", args=[world.project.slug]), {"version": 2})
    assert events(Kind.BUDGET) == [
        ("lead@test.example", "draft saved"),
        ("finance@test.example", "approved"),
    ]
    approved = AuditEvent.objects.get(action="approved")
    assert approved.target_name == "Budget of Llama Sft"
    assert (approved.details, approved.ip) == ({"version": 2}, "127.0.0.1")


def test_revisions_proposed_and_decided_are_recorded(world):
    budget_revision_decide(
        revision=world.revision, user=world.finance, approve=False, comment="Not now"
    )
    event = AuditEvent.objects.get(kind=Kind.BUDGET)
    assert (event.actor, event.action, event.details) == (
        world.finance,
        "revision rejected",
        {"revision": world.revision.pk, "comment": "Not now"},
    )


def test_an_allocation_rule_changed_in_the_admin_is_recorded_with_its_fields(
    client, world
):
    rule = world.project.allocation_rules.create(
        match_on="tag", tag_key="project", value="llama"
    )
    client.force_login(world.admin)
    url = reverse("admin:projects_allocationrule_change", args=[rule.pk])
    form = client.get(url).context["adminform"].form
    data = {k: v for k, v in form.initial.items() if v is not None}
    response = client.post(url, data | {"value": "llama-sft"})
    assert response.status_code == 302
    event = AuditEvent.objects.get(kind=Kind.ALLOCATION_RULE)
    assert (event.actor, event.action) == (world.admin, "changed in admin")
    assert event.details == {"changes": [{"changed": {"fields": ["Value"]}}]}
    assert "llama-sft" in event.target_name


def test_re_allocating_stored_costs_is_recorded(world):
    make_cost_record(date(2026, 1, 3), "5", tags={"project": "llama-sft"})
    world.project.allocation_rules.create(
        match_on="tag", tag_key="project", value="llama-sft"
    )
    cost_records_reallocate()
    assert events(Kind.ALLOCATION_RULE) == [("", "re-allocated stored costs")]
    assert AuditEvent.objects.get().details == {"records_moved": 1}


def test_new_credentials_are_recorded_as_changed_never_with_their_value(client, world):
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
    assert client.post(url, data).status_code == 302
    event = AuditEvent.objects.get(kind=Kind.SOURCE)
    assert (event.actor, event.target_name) == (world.admin, "AWS export")
    assert "credentials" in str(event.details).lower()
    row = AuditEvent.objects.filter(pk=event.pk).values().get()
    assert "1234567890" not in str(row)


def test_a_deleted_source_is_recorded(world):
    source = BillingSource.objects.create(name="Unused", kind="focus")
    billing_source_delete(source=source)
    assert events(Kind.SOURCE) == [("", "deleted")]
    assert AuditEvent.objects.get().target_name == "Unused"


def test_an_upload_its_new_source_and_its_import_are_recorded(
    finance_client,  # noqa: F811
    django_capture_on_commit_callbacks,
):
    with django_capture_on_commit_callbacks(execute=True):
        upload(finance_client, FOCUS_REAL.read_bytes())
    assert events(Kind.IMPORT) == [
        ("finance@test.example", "uploaded"),
        ("", "import imported"),  # by the worker, after the request
    ]
    assert AuditEvent.objects.get(action="uploaded").details == {"files": ["focus.csv"]}
    assert events(Kind.SOURCE) == [("finance@test.example", "created by an upload")]


def test_a_month_closed_and_reopened_is_recorded(world, time_machine):
    time_machine.move_to(datetime(2026, 3, 10, 12, tzinfo=UTC), tick=False)
    february = date(2026, 2, 1)
    month_close(month=february, user=world.finance, reason="sources late")
    month_reopen(month=february, user=world.admin, reason="a late invoice")
    assert events(Kind.MONTH) == [
        ("finance@test.example", "closed"),
        ("admin@test.example", "reopened"),
    ]
    reopened = AuditEvent.objects.get(action="reopened")
    assert reopened.details == {"month": "2026-02", "reason": "a late invoice"}


def test_api_tokens_created_and_revoked_are_recorded_without_their_key(client, world):
    client.force_login(world.lead)
    page = client.post(
        reverse("account_tokens"),
        {"name": "job", "expires_in_days": "30", "project": world.project.pk},
        follow=True,
    )
    key = page.context["key"]
    token = ApiToken.objects.get()
    client.post(reverse("account_token_revoke", args=[token.pk]))
    assert events(Kind.TOKEN) == [
        ("lead@test.example", "API token created"),
        ("lead@test.example", "API token revoked"),
    ]
    created = AuditEvent.objects.get(action="API token created")
    assert created.details == {"kind": "run-reporter", "project": world.project.slug}
    assert key not in str(list(AuditEvent.objects.values()))


def test_logins_and_failed_logins_are_recorded_without_the_password(client, world):
    login = reverse("login")
    client.post(login, {"username": "lead@test.example", "password": "wrong-pw-123"})
    client.post(login, {"username": "lead@test.example", "password": PASSWORD})
    assert events(Kind.LOGIN) == [
        ("lead@test.example", "login failed"),
        ("lead@test.example", "logged in"),
    ]
    failed, succeeded = AuditEvent.objects.filter(kind=Kind.LOGIN).order_by("id")
    assert (failed.actor, failed.ip) == (None, "127.0.0.1")
    assert succeeded.actor == world.lead
    assert "wrong-pw-123" not in str(list(AuditEvent.objects.values()))


def make_events(count: int, **fields) -> None:
    AuditEvent.objects.bulk_create(
        AuditEvent(kind=Kind.LOGIN, action="logged in", **fields) for _ in range(count)
    )


def signed_in(client, user) -> None:
    """Signed in, with the log of that login left out."""
    client.force_login(user)
    AuditEvent.objects.all().delete()


def test_finance_filters_the_log_by_kind_user_and_day(client, world):
    signed_in(client, world.finance)
    make_events(2, actor_name="lead@test.example", at=datetime(2026, 1, 5, tzinfo=UTC))
    make_events(1, actor_name="admin@test.example", at=datetime(2026, 1, 6, tzinfo=UTC))
    AuditEvent.objects.create(
        kind=Kind.MONTH, action="closed", actor_name="finance@test.example"
    )
    audit = reverse("audit_log")

    def rows(**query) -> int:
        page = client.get(audit, query).content.decode()
        return page.count('data-testid="audit-event"')

    assert rows() == 4
    assert rows(kind="login") == 3
    assert rows(kind="login", user="lead@") == 2
    assert rows(since="2026-01-06", until="2026-01-06") == 1
    assert rows(until="2026-01-05") == 2


def test_the_log_comes_fifty_events_to_a_page_newest_first(client, world):
    signed_in(client, world.admin)
    make_events(51, actor_name="lead@test.example", at=datetime(2026, 1, 5, tzinfo=UTC))
    make_events(
        1, actor_name="newest@test.example", at=datetime(2026, 2, 1, tzinfo=UTC)
    )
    first = client.get(reverse("audit_log")).content.decode()
    assert first.count('data-testid="audit-event"') == 50
    assert first.index("newest@test.example") < first.index("lead@test.example")
    second = client.get(reverse("audit_log"), {"page": 2}).content.decode()
    assert second.count('data-testid="audit-event"') == 2


@pytest.mark.parametrize("persona", ["lead", "member", "outsider"])
def test_team_users_cannot_read_the_log(client, world, persona):
    client.force_login(getattr(world, persona))
    assert client.get(reverse("audit_log")).status_code == 403


def test_the_admin_shows_the_log_and_cannot_add_change_or_delete_it(client, world):
    make_events(1, actor_name="lead@test.example")
    event = AuditEvent.objects.get()
    client.force_login(world.admin)
    assert client.get(reverse("admin:core_auditevent_changelist")).status_code == 200
    request = RequestFactory().get("/")
    request.user = world.admin
    model_admin = site._registry[AuditEvent]
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request, event)
    assert not model_admin.has_delete_permission(request, event)
    delete = reverse("admin:core_auditevent_delete", args=[event.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 403
    assert AuditEvent.objects.filter(pk=event.pk).exists()
