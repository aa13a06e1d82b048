"""Finance approves plans and revisions; leads report progress; everyone filters and
reads alerts; each person chooses how alerts reach them."""

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.urls import reverse

from accounts.models import User
from budgets.models import Alert, AlertKind, AlertRule, Budget, BudgetRevision
from tests.conftest import make_budget, make_project, make_spend

pytestmark = pytest.mark.django_db


def login(client, user):
    client.force_login(user)
    return client


def test_finance_approves_a_draft_budget(client, world):
    login(client, world.finance)
    url = reverse("budget_approve", args=[world.project.slug])
    response = client.post(url, {"version": 1})
    assert response.status_code == 302
    budget = Budget.objects.get(project=world.project)
    assert (budget.status, budget.approved_by) == (
        Budget.Status.APPROVED,
        world.finance,
    )


def test_a_lead_cannot_approve_their_own_budget(client, world):
    login(client, world.lead)
    url = reverse("budget_approve", args=[world.project.slug])
    response = client.post(url, {"version": 1})
    assert response.status_code == 403
    assert Budget.objects.get(project=world.project).status == Budget.Status.DRAFT


def test_approving_a_revision_changes_the_plan(client, world):
    login(client, world.finance)
    url = reverse("revision_detail", args=[world.project.slug, world.revision.pk])
    page = client.get(url).content.decode()
    assert "$3,000.00" in page and "$3,500.00" in page
    response = client.post(url, {"decision": "approve", "comment": "OK for Q1"})
    assert response.status_code == 302
    world.revision.refresh_from_db()
    assert world.revision.status == BudgetRevision.Status.APPROVED
    assert world.revision.decided_by == world.finance
    assert Budget.objects.get(project=world.project).total == Decimal("3500.00")


def test_a_rejection_needs_a_comment_and_keeps_the_plan(client, world):
    login(client, world.finance)
    url = reverse("revision_detail", args=[world.project.slug, world.revision.pk])
    response = client.post(url, {"decision": "reject", "comment": ""})
    assert "Say why the revision is rejected." in response.content.decode()
    client.post(url, {"decision": "reject", "comment": "Not before the Q1 review"})
    world.revision.refresh_from_db()
    assert world.revision.status == BudgetRevision.Status.REJECTED
    assert Budget.objects.get(project=world.project).total == Decimal("3000.00")
    page = client.get(reverse("project_detail", args=[world.project.slug]))
    assert "Not before the Q1 review" in page.content.decode()


def test_a_revision_is_decided_once(client, world):
    login(client, world.finance)
    url = reverse("revision_detail", args=[world.project.slug, world.revision.pk])
    client.post(url, {"decision": "approve", "comment": ""})
    client.post(url, {"decision": "reject", "comment": "too late"})
    world.revision.refresh_from_db()
    assert world.revision.status == BudgetRevision.Status.APPROVED


def test_a_lead_cannot_decide_a_revision(client, world):
    login(client, world.lead)
    url = reverse("revision_detail", args=[world.project.slug, world.revision.pk])
    assert client.post(url, {"decision": "approve"}).status_code == 403
    world.revision.refresh_from_db()
    assert world.revision.status == BudgetRevision.Status.PENDING


def test_a_lead_reports_a_runs_progress_and_sees_earned_value(client, world):
    world.run.progress_unit = "steps"
    world.run.units_planned = Decimal("1000")
    world.run.save()
    login(client, world.lead)
    url = reverse("run_detail", args=[world.project.slug, world.run.pk])
    client.post(url, {"status": "running", "units_done": "250"})
    world.run.refresh_from_db()
    assert world.run.units_done == Decimal("250")
    page = client.get(url).content.decode()
    assert "PV · planned value" in page
    assert "25.0%" in page


def test_a_member_cannot_report_progress(client, world):
    login(client, world.member)
    url = reverse("run_detail", args=[world.project.slug, world.run.pk])
    assert client.post(url, {"status": "failed"}).status_code == 403


def test_the_alerts_page_filters_by_status_and_rule(client, world):
    Alert.objects.create(
        kind=AlertKind.RUN_OVER,
        scope_key=f"run:{world.run.pk}",
        period=date(2026, 1, 1),
        threshold=Decimal("100"),
        project=world.project,
        training_run=world.run,
        severity=Alert.Severity.CRITICAL,
        status=Alert.Status.RESOLVED,
        subject="Llama Sft: run SFT run at 120% of plan",
        reason="Run SFT run is 20% over plan",
        value=Decimal("120"),
        fired_at=world.alert.fired_at,
    )
    login(client, world.member)
    active = client.get(reverse("alert_list")).content.decode()
    assert world.alert.subject in active and "at 120% of plan" not in active
    resolved = client.get(reverse("alert_list"), {"status": "resolved"})
    assert "at 120% of plan" in resolved.content.decode()
    by_rule = client.get(reverse("alert_list"), {"status": "all", "kind": "run_over"})
    assert world.alert.subject not in by_rule.content.decode()


def test_an_outsider_sees_no_alerts_of_other_teams(client, world):
    login(client, world.outsider)
    page = client.get(reverse("alert_list")).content.decode()
    assert world.alert.subject not in page
    assert "No open and acknowledged alerts" in page


def test_the_dashboard_and_project_show_alert_badges(client, world):
    login(client, world.lead)
    dashboard = client.get(reverse("dashboard")).content.decode()
    assert "1 open alert" in dashboard
    project = client.get(reverse("project_detail", args=[world.project.slug]))
    assert 'data-testid="alert-badge"' in project.content.decode()


def test_a_person_chooses_the_daily_digest(client, world):
    login(client, world.lead)
    client.post(reverse("notification_settings"), {"alert_delivery": "digest"})
    world.lead.refresh_from_db()
    assert world.lead.alert_delivery == User.AlertDelivery.DIGEST


def test_finance_chooses_the_teams_they_watch(client, world):
    login(client, world.finance)
    client.post(
        reverse("notification_settings"),
        {"alert_delivery": "immediate", "watched_teams": [world.team.pk]},
    )
    assert list(world.finance.watched_teams.all()) == [world.team]


def test_a_team_user_cannot_watch_other_teams(client, world):
    login(client, world.lead)
    client.post(
        reverse("notification_settings"),
        {"alert_delivery": "immediate", "watched_teams": [world.other_team.pk]},
    )
    assert not world.lead.watched_teams.exists()


def test_a_lead_overrides_the_thresholds_of_one_project(client, world):
    login(client, world.lead)
    url = reverse("alert_rules_edit", args=[world.project.slug])
    data = {f"{kind}-enabled": "on" for kind in AlertKind.values}
    data["budget_used-thresholds"] = "90, 120"
    data.pop("spend_anomaly-enabled")
    assert client.post(url, data).status_code == 302
    rules = {
        r.kind: (r.is_enabled, r.thresholds)
        for r in AlertRule.objects.filter(project=world.project)
    }
    assert rules == {"budget_used": (True, [90, 120]), "spend_anomaly": (False, [])}
    # Back to the defaults: the project keeps no rule of its own.
    data = {f"{kind}-enabled": "on" for kind in AlertKind.values}
    client.post(url, data)
    assert not AlertRule.objects.filter(project=world.project).exists()


def test_thresholds_must_be_numbers(client, world):
    login(client, world.lead)
    url = reverse("alert_rules_edit", args=[world.project.slug])
    response = client.post(url, {"budget_used-thresholds": "eighty"})
    assert "Give numbers separated by commas" in response.content.decode()
    assert not AlertRule.objects.exists()


def test_a_member_reads_the_rules_but_cannot_change_them(client, world):
    login(client, world.member)
    url = reverse("alert_rules_edit", args=[world.project.slug])
    assert "50, 80, 100" in client.get(url).content.decode()
    assert client.post(url, {"budget_used-thresholds": "99"}).status_code == 403


def test_the_overview_counts_each_teams_open_alerts(client, world):
    login(client, world.finance)
    page = client.get(reverse("overview")).content.decode()
    assert f'href="/alerts/?status=open&amp;team={world.team.slug}">1</a>' in page


def test_nobody_decides_their_own_revision(client, world):
    world.revision.proposed_by = world.admin
    world.revision.save()
    login(client, world.admin)
    url = reverse("revision_detail", args=[world.project.slug, world.revision.pk])
    response = client.post(url, {"decision": "approve", "comment": ""}, follow=True)
    assert "another finance user or admin decides it" in response.content.decode()
    world.revision.refresh_from_db()
    assert world.revision.status == BudgetRevision.Status.PENDING


def a_second_alert(world, **extra) -> Alert:
    fields = {
        "kind": AlertKind.FORECAST_OVER,
        "scope_key": f"project:{world.project.pk}",
        "period": date(2026, 1, 1),
        "threshold": Decimal("10"),
        "project": world.project,
        "severity": Alert.Severity.CRITICAL,
        "subject": "Llama Sft: forecast $9,000, 50% over its $6,000 budget",
        "reason": "Project Llama Sft is forecast to finish at $9,000",
        "value": Decimal("50"),
        "fired_at": world.alert.fired_at.replace(day=10),
    }
    return Alert.objects.create(**(fields | extra))


def test_every_page_counts_open_alerts_as_the_lists_open_tab_does(client, world):
    """One open alert, one acknowledged: the sidebar, the dashboard, the project, the
    overview and the list's Open tab all say one open; acknowledged ones are named as
    such."""
    a_second_alert(world, status=Alert.Status.ACKNOWLEDGED)
    login(client, world.finance)
    dashboard = client.get(reverse("dashboard")).content.decode()
    assert '<span class="nav-count" data-testid="nav-alert-count">1</span>' in dashboard
    assert ">1 open alert</a>" in dashboard
    assert ">1 acknowledged</a>" in dashboard
    assert f'href="/alerts/?status=open&amp;project={world.project.slug}"' in dashboard
    project = client.get(reverse("project_detail", args=[world.project.slug]))
    assert ">1 open alert</a>" in project.content.decode()
    overview = client.get(reverse("overview")).content.decode()
    assert f'href="/alerts/?status=open&amp;team={world.team.slug}">1</a>' in overview
    listed = client.get(reverse("alert_list"), {"status": "open"}).content.decode()
    assert listed.count('data-testid="alert-row"') == 1


def test_the_alert_list_puts_critical_alerts_first(client, world):
    """The warning fired later, yet the critical alert comes first."""
    critical = a_second_alert(world)
    assert critical.fired_at < world.alert.fired_at
    login(client, world.member)
    page = client.get(reverse("alert_list")).content.decode()
    assert page.index(critical.subject) < page.index(world.alert.subject)


def test_the_overview_shows_a_past_month_as_it_ended_and_never_a_future_one(
    client, world, time_machine
):
    time_machine.move_to(datetime(2026, 2, 10, 12, tzinfo=UTC), tick=False)
    make_spend(world.project, date(2026, 1, 20), "700")
    make_spend(world.project, date(2026, 2, 3), "40")
    login(client, world.finance)

    january = client.get(reverse("overview"), {"month": "2026-01"})
    current = client.get(reverse("overview"))
    future = client.get(reverse("overview"), {"month": "2027-05"})
    garbage = client.get(reverse("overview"), {"month": "soon"})

    assert january.context["month_total"] == Decimal("700")
    assert january.context["today"] == date(2026, 1, 31)
    assert "January 2026 as it ended" in january.content.decode()
    assert january.context["next_month"] == date(2026, 2, 1)
    for page in (current, future, garbage):
        assert page.context["this_month"] == date(2026, 2, 1)
        assert page.context["month_total"] == Decimal("40")
        assert page.context["next_month"] is None


def test_finance_sees_on_the_dashboard_what_waits_for_its_decision(client, world):
    draft_project = make_project(world.team, world.lead, "drafted")
    make_budget(draft_project, {date(2026, 1, 1): "10"})
    Budget.objects.filter(project=draft_project).update(status=Budget.Status.DRAFT)
    login(client, world.finance)

    page = client.get(reverse("dashboard")).content.decode()

    notice = page[page.index('data-testid="waiting-decisions"') :]
    notice = notice[: notice.index("</div>")]
    revision_url = reverse(
        "revision_detail", args=[world.project.slug, world.revision.pk]
    )
    assert "1 plan revision" in notice and revision_url in notice
    drafts = Budget.objects.filter(status=Budget.Status.DRAFT).count()
    assert f"{drafts} draft budgets" in notice
    assert draft_project.get_absolute_url() in notice
    login(client, world.lead)  # leads decide nothing
    assert "waiting-decisions" not in client.get(reverse("dashboard")).content.decode()


def test_a_team_page_names_its_people_and_shows_addresses_to_finance_only(
    client, world
):
    url = reverse("team_detail", args=[world.team.slug])
    login(client, world.member)
    as_member = client.get(url).content.decode()
    login(client, world.finance)
    as_finance = client.get(url).content.decode()

    assert "Lena Lead" in as_member
    assert "lead@test.example" not in as_member
    assert "lead@test.example" in as_finance
