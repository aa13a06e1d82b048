"""Archiving a finished project: who may, what leaves (the dashboard, the alerts) and
what stays (its pages, its spend in reports)."""

from datetime import UTC, date, datetime

import pytest
from django.urls import reverse

from budgets.alerts import alerts_evaluate
from budgets.models import Alert
from projects.models import Project
from tests.conftest import make_spend

pytestmark = pytest.mark.django_db

PERSONAS = ("lead", "member", "outsider", "finance", "admin")


@pytest.fixture(autouse=True)
def february(time_machine):
    time_machine.move_to(datetime(2026, 2, 10, 12, tzinfo=UTC), tick=False)


def archive(client, project: Project):
    return client.post(reverse("project_archive", args=[project.slug]))


def is_archived(project: Project) -> bool:
    project.refresh_from_db()
    return project.archived_at is not None


@pytest.mark.parametrize("persona", ["anonymous", *PERSONAS])
def test_the_teams_leads_and_admins_archive_and_unarchive(client, world, persona):
    if persona != "anonymous":
        client.force_login(getattr(world, persona))
    expected = {"member": 403, "finance": 403, "outsider": 404}.get(persona, 302)
    allowed = persona in ("lead", "admin")

    assert archive(client, world.project).status_code == expected
    assert is_archived(world.project) == allowed

    world.project.archived_at = datetime(2026, 2, 1, tzinfo=UTC)
    world.project.save()
    unarchive = reverse("project_unarchive", args=[world.project.slug])
    assert client.post(unarchive).status_code == expected
    assert is_archived(world.project) != allowed


def test_an_archived_project_leaves_the_dashboard_and_the_filter_shows_it(
    client, world
):
    client.force_login(world.lead)
    archive(client, world.project)

    dashboard = client.get(reverse("dashboard"))
    assert world.project not in [s.project for s in dashboard.context["summaries"]]
    assert 'data-status="on_track"' not in dashboard.content.decode()
    archived = client.get(reverse("dashboard"), {"archived": "1"})
    assert [s.project for s in archived.context["summaries"]] == [world.project]
    assert "Archived</span>" in archived.content.decode()


def test_an_archived_projects_page_and_history_stay_with_an_archived_badge(
    client, world
):
    make_spend(world.project, date(2026, 1, 12), "321")
    client.force_login(world.lead)
    archive(client, world.project)

    page = client.get(world.project.get_absolute_url())
    assert page.status_code == 200
    assert 'data-testid="archived-badge"' in page.content.decode()
    assert page.context["summary"].variance.actual_to_date == 321
    team = client.get(world.team.get_absolute_url())
    assert world.project not in [s.project for s in team.context["summaries"]]
    assert list(team.context["archived"]) == [world.project]
    client.force_login(world.finance)
    report = client.get(reverse("report_detail", args=[date(2026, 1, 1)]))
    assert world.project.name in report.content.decode()
    assert "321" in report.content.decode()


def test_an_archived_project_is_not_evaluated_for_new_alerts(client, world):
    Alert.objects.all().delete()
    make_spend(world.project, date(2026, 2, 5), "5000")  # 2,000 planned in February
    client.force_login(world.lead)
    archive(client, world.project)

    alerts_evaluate(send_later=False)
    assert not Alert.objects.filter(project=world.project).exists()

    client.post(reverse("project_unarchive", args=[world.project.slug]))
    alerts_evaluate(send_later=False)
    assert Alert.objects.filter(project=world.project).exists()


def test_archiving_twice_says_so_and_keeps_the_first_date(client, world):
    client.force_login(world.lead)
    archive(client, world.project)
    first = Project.objects.get(pk=world.project.pk).archived_at

    response = archive(client, world.project)

    assert is_archived(world.project)
    assert world.project.archived_at == first
    assert "was already archived" in client.get(response["Location"]).content.decode()
