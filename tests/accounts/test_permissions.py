"""Every page, for every persona, generated from the URL configuration.

A new named URL without a row in PAGES fails `test_every_page_has_a_permission_rule`,
so no page can ship without someone deciding who may see it. The API's endpoints
(`api_*`), method by method: test_api_permissions.py.
"""

from datetime import UTC, date, datetime

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from reports.models import ReportFile

PERSONAS = ("anonymous", "lead", "member", "outsider", "finance", "admin")

LOGIN = 302  # anonymous users are sent to the login page
OPEN = dict.fromkeys(PERSONAS, 200)
SIGNED_IN = {**dict.fromkeys(PERSONAS, 200), "anonymous": LOGIN}
TEAM_ONLY = {**SIGNED_IN, "outsider": 404}
PLAN_EDITORS = {**TEAM_ONLY, "member": 403, "finance": 403}
FINANCE_ONLY = {**SIGNED_IN, "lead": 403, "member": 403, "outsider": 403}
ADMIN_ONLY = {**FINANCE_ONLY, "finance": 403}
API_SIGNED_IN = {**SIGNED_IN, "anonymous": 401}  # WWW-Authenticate: Bearer
ANONYMOUS_ONLY = {**dict.fromkeys(PERSONAS, 302), "anonymous": 200}
DRAWN_BY_A_WORKER = {**dict.fromkeys(PERSONAS, 302)}
# Leads create projects for the teams they lead (the outsider leads another team;
# their 404 for this team's: tests/projects/test_project_create.py).
PROJECT_CREATORS = {**SIGNED_IN, "member": 403}
POST_ONLY = {**dict.fromkeys(PERSONAS, 405), "anonymous": LOGIN}
OWNER = {**dict.fromkeys(PERSONAS, 404), "anonymous": LOGIN, "lead": 200}


def pdf_of(user) -> int:
    """A PDF drawn for `user` alone."""
    return ReportFile.objects.create(user=user, month=date(2026, 1, 1), format="pdf").pk


# url name -> (kwargs from the world fixture, expected status per persona)
PAGES = {
    "dashboard": (lambda w: {}, SIGNED_IN),
    "project_detail": (lambda w: {"slug": w.project.slug}, TEAM_ONLY),
    "project_new": (lambda w: {}, PROJECT_CREATORS),
    # Every persona's POST: tests/projects/test_project_archive.py.
    "project_archive": (lambda w: {"slug": w.project.slug}, POST_ONLY),
    "project_unarchive": (lambda w: {"slug": w.project.slug}, POST_ONLY),
    "budget_edit": (lambda w: {"slug": w.project.slug}, PLAN_EDITORS),
    "team_list": (lambda w: {}, SIGNED_IN),
    "team_detail": (lambda w: {"slug": w.team.slug}, TEAM_ONLY),
    "overview": (lambda w: {}, FINANCE_ONLY),
    "invoice_list": (lambda w: {}, SIGNED_IN),
    "invoice_detail": (lambda w: {"pk": w.invoice.pk}, TEAM_ONLY),
    # Finance decides on an invoice (POST only; every persona's POST:
    # tests/billing/test_invoices.py).
    "invoice_decide": (
        lambda w: {"pk": w.invoice.pk},
        {**dict.fromkeys(PERSONAS, 405), "anonymous": LOGIN},
    ),
    "login": (lambda w: {}, ANONYMOUS_ONLY),
    "logout": (lambda w: {}, dict.fromkeys(PERSONAS, 405)),  # POST only
    "password_reset": (lambda w: {}, OPEN),
    "password_reset_done": (lambda w: {}, OPEN),
    "password_reset_confirm": (lambda w: {"uidb64": "MQ", "token": "x-y"}, OPEN),
    "password_reset_complete": (lambda w: {}, OPEN),
    "health": (lambda w: {}, OPEN),
    "source_list": (lambda w: {}, FINANCE_ONLY),
    "source_detail": (lambda w: {"pk": w.source.pk}, FINANCE_ONLY),
    # Admins add and change sources (every persona's POST:
    # tests/billing/test_source_form.py).
    "source_create": (lambda w: {}, ADMIN_ONLY),
    "source_edit": (lambda w: {"pk": w.source.pk}, ADMIN_ONLY),
    # POST only (every persona's POST: tests/billing/test_connection_test.py).
    "source_test": (lambda w: {"pk": w.source.pk}, POST_ONLY),
    # Finance deletes a source without data: GET asks to confirm (every persona's
    # POST: tests/billing/test_views.py).
    "source_delete": (lambda w: {"pk": w.source.pk}, FINANCE_ONLY),
    "upload": (lambda w: {}, FINANCE_ONLY),
    "import_list": (lambda w: {}, FINANCE_ONLY),
    "import_detail": (lambda w: {"pk": w.import_run.pk}, FINANCE_ONLY),
    "import_status": (lambda w: {"pk": w.import_run.pk}, FINANCE_ONLY),
    "schema": (lambda w: {}, API_SIGNED_IN),
    "alert_list": (lambda w: {}, SIGNED_IN),
    "alert_rules_edit": (lambda w: {"slug": w.project.slug}, TEAM_ONLY),
    "alert_detail": (lambda w: {"pk": w.alert.pk}, TEAM_ONLY),
    "notification_settings": (lambda w: {}, SIGNED_IN),
    "account_tokens": (lambda w: {}, SIGNED_IN),
    "project_webhooks": (lambda w: {"slug": w.project.slug}, PLAN_EDITORS),
    "team_webhooks": (
        lambda w: {"slug": w.team.slug},
        {**PLAN_EDITORS, "outsider": 404},
    ),
    "webhook_test": (lambda w: {"pk": 1}, POST_ONLY),
    "webhook_delete": (lambda w: {"pk": 1}, POST_ONLY),
    "account_token_revoke": (lambda w: {"pk": 1}, POST_ONLY),
    # Who did what across every team: finance and admins only.
    "audit_log": (lambda w: {}, FINANCE_ONLY),
    "budget_approve": (
        lambda w: {"slug": w.project.slug},
        {**dict.fromkeys(PERSONAS, 405), "anonymous": LOGIN},  # POST only
    ),
    "revision_detail": (
        lambda w: {"slug": w.project.slug, "pk": w.revision.pk},
        TEAM_ONLY,
    ),
    "run_detail": (lambda w: {"slug": w.project.slug, "pk": w.run.pk}, TEAM_ONLY),
    # Everyone explores the costs they see: their teams', all for finance and admins
    # (what each persona sees there: tests/billing/test_explorer.py).
    "cost_explorer": (lambda w: {}, SIGNED_IN),
    "cost_explorer_csv": (lambda w: {}, SIGNED_IN),
    "cost_records": (lambda w: {}, SIGNED_IN),
    "cost_records_csv": (lambda w: {}, SIGNED_IN),
    # Everyone has a monthly report: of their own teams (test_views in reports).
    "report_list": (lambda w: {}, SIGNED_IN),
    "report_detail": (lambda w: {"month": date(2026, 1, 1)}, SIGNED_IN),
    "report_json": (lambda w: {"month": date(2026, 1, 1)}, SIGNED_IN),
    # The exports carry what the report page shows each persona; the chargeback
    # journal posts every team's spend, for finance (tests/reports/test_exports.py).
    "report_export_csv": (lambda w: {"month": date(2026, 1, 1)}, SIGNED_IN),
    "report_export_xlsx": (lambda w: {"month": date(2026, 1, 1)}, SIGNED_IN),
    # A worker draws the PDF of an open month: the download waits on its page.
    "report_export_pdf": (lambda w: {"month": date(2026, 1, 1)}, DRAWN_BY_A_WORKER),
    "report_file": (lambda w: {"month": date(2026, 1, 1), "pk": pdf_of(w.lead)}, OWNER),
    "report_export_json": (lambda w: {"month": date(2026, 1, 1)}, SIGNED_IN),
    "report_export_journal": (lambda w: {"month": date(2026, 1, 1)}, FINANCE_ONLY),
    # Finance closes and reopens a month (POST only; every persona's POST:
    # tests/reports/test_closing.py).
    "month_close": (
        lambda w: {"month": date(2026, 1, 1)},
        {**dict.fromkeys(PERSONAS, 405), "anonymous": LOGIN},
    ),
    "month_reopen": (
        lambda w: {"month": date(2026, 1, 1)},
        {**dict.fromkeys(PERSONAS, 405), "anonymous": LOGIN},
    ),
    # Finance books a month's accruals (POST only; tests/reports/test_accruals.py).
    "report_accruals_book": (
        lambda w: {"month": date(2026, 1, 1)},
        {**dict.fromkeys(PERSONAS, 405), "anonymous": LOGIN},
    ),
}


@pytest.fixture(autouse=True)
def february(time_machine):
    """Pages read the date: the world's January 2026 report exists once it ended."""
    time_machine.move_to(datetime(2026, 2, 10, 12, tzinfo=UTC), tick=False)


def named_patterns(resolver=None, namespace=""):
    """Names of every URL pattern outside Django admin."""
    resolver = resolver or get_resolver()
    for pattern in resolver.url_patterns:
        if isinstance(pattern, URLResolver):
            if pattern.namespace == "admin":
                continue
            yield from named_patterns(pattern, pattern.namespace or namespace)
        elif isinstance(pattern, URLPattern):
            yield (f"{namespace}:" if namespace else "") + (pattern.name or "")


def test_every_page_has_a_permission_rule():
    names = {name for name in named_patterns() if not name.startswith("api_")}
    assert "" not in names, "every URL pattern needs a name"
    assert names == set(PAGES), (
        f"without a rule: {sorted(names - set(PAGES))}; "
        f"stale rules: {sorted(set(PAGES) - names)}"
    )


@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize("name", sorted(PAGES))
def test_each_persona_gets_the_expected_answer(client, world, name, persona):
    kwargs, expected = PAGES[name]
    if persona != "anonymous":
        client.force_login(getattr(world, persona))
    response = client.get(reverse(name, kwargs=kwargs(world)))
    assert response.status_code == expected[persona]


def test_an_outsider_cannot_tell_a_hidden_project_from_a_missing_one(client, world):
    client.force_login(world.lead)
    hidden = client.get(reverse("project_detail", args=[world.other_project.slug]))
    missing = client.get(reverse("project_detail", args=["no-such-project"]))
    assert hidden.status_code == missing.status_code == 404


def test_the_dashboard_lists_only_the_users_team_projects(client, world):
    client.force_login(world.lead)
    page = client.get(reverse("dashboard")).content.decode()
    assert world.project.name in page
    assert world.other_project.name not in page


def test_finance_sees_every_team_project_on_the_dashboard(client, world):
    client.force_login(world.finance)
    page = client.get(reverse("dashboard")).content.decode()
    assert world.project.name in page
    assert world.other_project.name in page


def test_the_api_hides_other_teams_projects(client, world):
    client.force_login(world.member)
    page = client.get(reverse("api_project_list")).json()
    slugs = [p["slug"] for p in page["results"]]
    assert slugs == [world.project.slug]


def test_a_finance_user_cannot_post_a_plan_change(client, world):
    client.force_login(world.finance)
    response = client.post(reverse("budget_edit", args=[world.project.slug]), {})
    assert response.status_code == 403


def test_an_admin_moved_to_finance_loses_admin_rights(world):
    world.admin.role = world.admin.Role.FINANCE
    world.admin.save()
    world.admin.refresh_from_db()
    assert not (world.admin.is_superuser or world.admin.is_staff)
    assert not world.admin.is_admin
