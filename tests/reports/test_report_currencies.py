"""Currencies in the monthly report: spend converted with the rate of each day across
two months, a missing rate named by currency and days, the rates listed, and a
budget in euros converted with each month's rate."""

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.urls import reverse

from accounts.models import Team
from billing.models import FxRate
from reports.services import days_in_words, monthly_report
from tests.conftest import make_budget, make_project, make_spend

pytestmark = pytest.mark.django_db

JANUARY, FEBRUARY = date(2026, 1, 1), date(2026, 2, 1)


@pytest.fixture(autouse=True)
def in_march(time_machine):
    time_machine.move_to(datetime(2026, 3, 10, 9, tzinfo=UTC), tick=False)


@pytest.fixture
def rates(db):
    for currency, day, rate in [
        ("EUR", date(2026, 1, 1), "1.10"),
        ("EUR", date(2026, 2, 1), "1.20"),
        ("EUR", date(2026, 2, 15), "1.25"),
        ("JPY", date(2026, 2, 10), "0.0065"),
    ]:
        FxRate.objects.create(currency=currency, date=day, rate=Decimal(rate))


@pytest.fixture
def spend(world, rates):
    """Euros in January and February; yen before their first rate and after it."""
    make_spend(world.project, date(2026, 1, 20), "100", billing_currency="EUR")
    make_spend(world.project, date(2026, 2, 2), "100", billing_currency="EUR")
    make_spend(world.project, date(2026, 2, 20), "100", billing_currency="EUR")
    for day in (3, 4, 5, 9, 12):
        make_spend(None, date(2026, 2, day), "1000", billing_currency="JPY")


def report(month: date):
    teams = Team.objects.all()
    return monthly_report(month=month, teams=teams, whole_organisation=True)


def test_each_month_converts_its_spend_with_the_rate_of_each_day(spend):
    january, february = report(JANUARY), report(FEBRUARY)
    assert january.total.effective_cost == Decimal("110")  # 100 EUR at 1.10
    # 100 EUR at 1.20, 100 EUR at 1.25, 1,000 JPY at 0.0065; the other yen apart.
    assert february.total.effective_cost == Decimal("251.5")
    assert [(r.currency, r.first_rate) for r in january.rates_used] == [
        ("EUR", Decimal("1.1"))
    ]
    eur, jpy = february.rates_used
    assert (eur.currency, eur.days, eur.rates) == ("EUR", 2, 2)
    assert (eur.first_day, eur.first_rate) == (date(2026, 2, 2), Decimal("1.2"))
    assert (eur.last_day, eur.last_rate) == (date(2026, 2, 20), Decimal("1.25"))
    assert (jpy.currency, jpy.days, jpy.first_rate) == ("JPY", 1, Decimal("0.0065"))


def test_a_missing_rate_is_named_by_currency_and_days_and_never_guessed(
    client, world, spend
):
    [missing] = report(FEBRUARY).missing_rates
    assert (missing.currency, missing.amount) == ("JPY", Decimal("4000"))
    assert missing.days_text == "3–5 Feb, 9 Feb"
    reconciliation = report(FEBRUARY).reconciliation
    yen = next(
        r
        for r in reconciliation.by_currency
        if (r.measure, r.currency) == ("effective_cost", "JPY")
    )
    assert (yen.records.unconverted, yen.report.unconverted) == (4000, 4000)
    assert yen.records.converted == yen.report.converted == Decimal("6.5")
    assert reconciliation.balanced
    client.force_login(world.finance)
    page = client.get(reverse("report_detail", args=[FEBRUARY])).content.decode()
    assert "JPY: 3–5 Feb, 9 Feb" in page
    fx = client.get(reverse("report_json", args=[FEBRUARY])).json()["fx"]
    assert fx["missing"][0]["days"] == [
        "2026-02-03",
        "2026-02-04",
        "2026-02-05",
        "2026-02-09",
    ]
    assert fx["rates_used"][0] == {
        "currency": "EUR",
        "days": 2,
        "rates": 2,
        "first": {"date": "2026-02-02", "rate": "1.2000000000"},
        "last": {"date": "2026-02-20", "rate": "1.2500000000"},
    }


def test_days_are_written_as_runs():
    days = [date(2026, 1, 31), date(2026, 2, 1), date(2026, 2, 3)]
    assert days_in_words(days) == "31 Jan–1 Feb, 3 Feb"


def test_a_budget_in_euros_is_planned_at_each_months_rate(world, rates):
    euro = make_project(world.team, world.lead, "euro-proj")
    make_budget(euro, {JANUARY: "1000.00", FEBRUARY: "1000.00"}, currency="EUR")
    make_spend(euro, date(2026, 2, 10), "1000")
    february = report(FEBRUARY)
    project = next(p for p in february.projects if p.project == euro)
    # Each month at the rate in force on its first day: 1.10, then 1.20.
    assert (project.plan, project.ytd_plan) == (Decimal("1200"), Decimal("2300"))
    assert project.summary.variance.total == Decimal("2300")
    assert project.variance == Decimal("-200")
    assert february.trend[-1].plan == Decimal("2000") + Decimal("1200")
    assert february.trend[-2].plan == Decimal("1000") + Decimal("1100")
