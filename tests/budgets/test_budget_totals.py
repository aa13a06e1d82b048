"""A budget in another currency is converted with each month's rate before it is
compared with the spend; totals over budgets of different cost measures keep them
apart (the team page, the organisation overview)."""

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.urls import reverse

from billing.models import FxRate
from budgets.models import CostMeasure
from budgets.services import project_summaries, project_summary, team_variance
from reports.selectors import team_totals
from tests.conftest import make_budget, make_project, make_spend

pytestmark = pytest.mark.django_db

JANUARY, FEBRUARY = date(2026, 1, 1), date(2026, 2, 1)


@pytest.fixture(autouse=True)
def mid_february(time_machine):
    time_machine.move_to(datetime(2026, 2, 14, 12, tzinfo=UTC), tick=False)


@pytest.fixture
def euro_project(world):
    FxRate.objects.create(currency="EUR", date=JANUARY, rate=Decimal("1.10"))
    FxRate.objects.create(currency="EUR", date=FEBRUARY, rate=Decimal("1.20"))
    project = make_project(world.team, world.lead, "euro-proj")
    make_budget(project, {JANUARY: "1000.00", FEBRUARY: "2800.00"}, currency="EUR")
    make_spend(project, date(2026, 1, 10), "1200")
    return project


def test_a_budget_in_euros_is_compared_in_the_reporting_currency(euro_project):
    summary = project_summary(project=euro_project, as_of=date(2026, 1, 31))
    variance = summary.variance
    # January at 1.10, February at 1.20: 1,100 + 3,360 dollars.
    assert variance.total == Decimal("4460")
    assert variance.plan_to_date == Decimal("1100")
    assert variance.actual_to_date == Decimal("1200")
    assert (summary.plan.rates[JANUARY], summary.plan.rates[FEBRUARY]) == (
        Decimal("1.1"),
        Decimal("1.2"),
    )
    assert "$1,200 spent vs $1,100 planned" in variance.reason


def test_the_project_page_shows_the_converted_budget_and_its_own(
    client, world, euro_project
):
    client.force_login(world.lead)
    page = client.get(euro_project.get_absolute_url()).content.decode()
    assert "$4,460" in page
    assert "€3,800 at each month's rate" in page


def test_a_month_without_a_rate_is_named_and_never_converted_at_a_guess(client, world):
    FxRate.objects.create(currency="JPY", date=date(2026, 2, 10), rate=Decimal("0.01"))
    project = make_project(world.team, world.lead, "yen-proj")
    make_budget(project, {JANUARY: "100000", FEBRUARY: "100000"}, currency="JPY")
    summary = project_summary(project=project, as_of=date(2026, 2, 14))
    # February takes the rate in force on its last day; January has none at all.
    assert summary.plan.missing_rates == [JANUARY]
    assert summary.variance.total == Decimal("100000") + Decimal("1000")
    client.force_login(world.lead)
    page = client.get(project.get_absolute_url()).content.decode()
    assert 'data-testid="budget-unconverted"' in page
    assert "January 2026" in page
    team = team_variance(
        project_summaries(projects=[world.project, project], as_of=date(2026, 2, 14))
    )
    assert team.unconverted == 1
    assert team.budget == Decimal("3000.00")  # llama-sft's alone


def test_team_totals_keep_budgets_of_different_measures_apart(client, world):
    billed = make_project(world.team, world.lead, "billed-proj")
    make_budget(billed, {FEBRUARY: "300.00"}, cost_measure=CostMeasure.BILLED)
    make_spend(world.project, date(2026, 2, 3), "500")
    make_spend(billed, date(2026, 2, 4), "100", billed_cost=Decimal("250"))

    team = team_variance(
        project_summaries(projects=[world.project, billed], as_of=date(2026, 2, 14))
    )

    assert team.mixed_measures
    assert team.budget is None and team.actual_to_date is None
    measures = {m.measure: m for m in team.measures}
    assert (measures["effective_cost"].budget, measures["billed_cost"].budget) == (
        Decimal("3000.00"),
        Decimal("300.00"),
    )
    assert measures["billed_cost"].actual_to_date == Decimal("250")
    assert measures["effective_cost"].actual_to_date == Decimal("500")
    totals = {row.team.slug: row for row in team_totals(as_of=date(2026, 2, 14))}
    foundation = totals["foundation"]
    assert foundation.month_actual is None
    assert foundation.month_by_measure == {
        "billed_cost": Decimal("250"),
        "effective_cost": Decimal("500"),
    }
    client.force_login(world.finance)
    overview = client.get(reverse("overview")).content.decode()
    assert 'data-testid="mixed-measures"' in overview
    team_page = client.get(reverse("team_detail", args=[world.team.slug]))
    assert 'data-testid="team-measures"' in team_page.content.decode()


def test_one_measure_adds_up_as_before(world):
    second = make_project(world.team, world.lead, "second")
    make_budget(second, {FEBRUARY: "500.00"})
    team = team_variance(
        project_summaries(projects=[world.project, second], as_of=date(2026, 2, 14))
    )
    assert not team.mixed_measures
    assert team.budget == Decimal("3500.00")
