"""What the portal pages show, at fixed moments."""

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
import time_machine
from django.conf import settings
from django.core import mail
from django.urls import reverse

from budgets.views import DASHBOARD_CARDS
from tests.conftest import make_budget, make_project, make_spend

pytestmark = pytest.mark.django_db


@time_machine.travel(datetime(2026, 2, 1, 0, 30, tzinfo=UTC), tick=False)
def test_just_after_midnight_on_the_first_the_dashboard_shows_the_new_month(
    client, world
):
    make_spend(world.project, date(2026, 1, 31), "500")
    make_spend(world.project, date(2026, 2, 1), "70")
    client.force_login(world.lead)
    summary = client.get(reverse("dashboard")).context["summaries"][0]
    assert summary.month_plan == Decimal("2000.00")  # February's line
    assert summary.month_actual == Decimal("70")
    assert summary.variance.actual_to_date == Decimal("570")


@time_machine.travel(datetime(2026, 1, 20, 12, tzinfo=UTC), tick=False)
def test_a_dashboard_of_many_projects_shows_them_a_page_at_a_time_worst_first(
    client, world
):
    """The counts are the whole organisation's; the cards, 24 at a time, worst first:
    the one project over its plan to date leads the first page, whatever its name."""
    for number in range(DASHBOARD_CARDS + 5):
        project = make_project(world.team, world.lead, f"a-{number:02d}")
        make_budget(project, {date(2026, 1, 1): "1000.00"})
    make_spend(world.project, date(2026, 1, 10), "1500")  # llama-sft: at risk
    client.force_login(world.finance)
    first = client.get(reverse("dashboard"))
    assert first.context["counts"] == {
        "over": 0,
        "at_risk": 1,
        "on_track": DASHBOARD_CARDS + 5,
        "no_budget": 1,  # the other team's
    }
    slugs = [s.project.slug for s, _ in first.context["cards"]]
    assert len(slugs) == DASHBOARD_CARDS and slugs[0] == "llama-sft"
    assert "Projects 1–24 of 31, worst first" in first.content.decode()
    last = client.get(reverse("dashboard"), {"page": 2})
    rest = [s.project.slug for s, _ in last.context["cards"]]
    assert len(rest) == 7 and not set(rest) & set(slugs)


@time_machine.travel(datetime(2026, 1, 31, 23, 59, tzinfo=UTC), tick=False)
def test_the_project_page_shows_the_reason_and_the_chart_data(client, world):
    make_spend(world.project, date(2026, 1, 10), "1500")  # January's plan is 1,000
    client.force_login(world.member)
    response = client.get(reverse("project_detail", args=[world.project.slug]))
    page = response.content.decode()
    assert "Project Llama Sft is 50% over plan to date: $1,500 spent" in page
    assert response.context["chart"]["actual"] == [Decimal("1500")] + [None] * 11
    assert 'id="cumulative-data"' in page
    assert "Edit plan" not in page  # members read only


@time_machine.travel(datetime(2026, 1, 31, 23, 59, tzinfo=UTC), tick=False)
def test_the_organisation_overview_shows_unallocated_make_spend(client, world):
    today = datetime.now(UTC).date()
    make_spend(None, today, "42")
    client.force_login(world.finance)
    response = client.get(reverse("overview"))
    assert response.context["month_unallocated"] == Decimal("42")
    assert "$42" in response.content.decode()


def test_the_invoice_page_shows_its_lines_and_total(client, world):
    client.force_login(world.lead)
    page = client.get(reverse("invoice_detail", args=[world.invoice.pk])).content
    assert b"H100 hours" in page
    assert b"$1,234.50" in page


def test_a_password_reset_sends_one_email_with_a_working_link(client, world):
    client.post(reverse("password_reset"), {"email": world.lead.email})
    assert len(mail.outbox) == 1
    email = mail.outbox[0]
    assert email.to == [world.lead.email]
    assert email.subject == "Reset your Spendtracker password"
    assert email.alternatives and "Choose a new password" in email.alternatives[0][0]
    link = next(w for w in email.body.split() if "/accounts/password-reset/" in w)
    assert link.startswith(settings.SITE_URL + "/accounts/password-reset/")
    path = link.removeprefix(settings.SITE_URL)
    form_page = client.get(path, follow=True)
    assert form_page.context["validlink"] is True
    client.post(
        form_page.redirect_chain[-1][0],
        {
            "new_password1": "a-new-long-password-9",
            "new_password2": "a-new-long-password-9",
        },
    )
    world.lead.refresh_from_db()
    assert world.lead.check_password("a-new-long-password-9")


def test_an_unknown_address_gets_no_email_and_the_same_answer(client, world):
    response = client.post(reverse("password_reset"), {"email": "nobody@x.example"})
    assert response.status_code == 302
    assert mail.outbox == []


def test_the_variance_api_returns_exact_decimal_strings(client, world):
    with time_machine.travel(datetime(2026, 1, 31, 12, tzinfo=UTC), tick=False):
        make_spend(world.project, date(2026, 1, 5), "900.126")
        client.force_login(world.lead)
        data = client.get(
            reverse("api_project_variance", args=[world.project.slug])
        ).json()
    assert data == {
        "slug": "llama-sft",
        "as_of": "2026-01-31",
        "currency": "USD",
        "budget": "3000.00",
        "plan_to_date": "1000.00",
        "actual_to_date": "900.13",
        "variance": "-99.87",
        "variance_percent": "-10.0",
        "forecast": "2900.13",
        "status": "on_track",
        "reason": "Project Llama Sft is on plan: $900 spent vs $1,000 planned to date",
    }
