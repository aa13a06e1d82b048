"""The monthly report: figures computed by hand from the spend each test makes."""

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.urls import reverse

from accounts.models import Team
from budgets.models import CostMeasure
from reports.services import monthly_report
from tests.conftest import make_budget, make_project, make_spend

pytestmark = pytest.mark.django_db

FEBRUARY = date(2026, 2, 1)


@pytest.fixture(autouse=True)
def in_march(time_machine):
    time_machine.move_to(datetime(2026, 3, 10, 9, tzinfo=UTC), tick=False)


@pytest.fixture
def february(world):
    """llama-sft plans 2,000 for February (the world's budget); a second project of
    the same team tracks billed cost; the other team spends too; some spend is
    unallocated, some provisional, one cost line arrived in euros without a rate."""
    billed = make_project(world.team, world.lead, "billed-proj")
    make_budget(billed, {FEBRUARY: "300.00"}, cost_measure=CostMeasure.BILLED)
    make_spend(world.project, date(2026, 1, 20), "400")
    make_spend(world.project, date(2026, 2, 3), "1500", training_run=world.run)
    make_spend(world.project, date(2026, 2, 27), "700", is_provisional=True)
    make_spend(
        billed,
        date(2026, 2, 10),
        "200",
        billed_cost=Decimal("250"),
        provider_name="CoreWeave",
        service_category="Compute",
    )
    make_spend(world.other_project, date(2026, 2, 11), "90")
    make_spend(None, date(2026, 2, 12), "60", charge_category="Tax")
    make_spend(None, date(2026, 2, 13), "5", billing_currency="EUR")
    make_spend(world.project, date(2026, 3, 1), "999")
    return billed


def finance_report(world):
    return monthly_report(
        month=FEBRUARY, teams=Team.objects.all(), whole_organisation=True
    )


def test_each_project_is_planned_against_its_months_actual_in_its_own_measure(
    world, february
):
    report = finance_report(world)
    projects = {p.project.slug: p for p in report.projects}
    llama = projects["llama-sft"]
    assert (llama.plan, llama.actual, llama.variance) == (
        Decimal("2000.00"),
        Decimal("2200"),
        Decimal("200.00"),
    )
    assert llama.ytd_plan == Decimal("3000.00")
    assert llama.ytd_actual == Decimal("2600")
    assert llama.previous_actual == Decimal("400")
    billed = projects["billed-proj"]
    assert (billed.measure, billed.actual) == ("billed_cost", Decimal("250"))
    run = llama.runs[0]
    assert run.month_actual == Decimal("1500")


def test_totals_keep_measures_apart_and_reconcile_with_the_unallocated(world, february):
    report = finance_report(world)
    assert report.total.effective_cost == Decimal("2550")  # 2200+200+90+60
    assert report.total.billed_cost == Decimal("2600")
    assert report.unallocated.effective_cost == Decimal("60")
    assert report.provisional.effective_cost == Decimal("700")
    assert report.unconverted == {"EUR": Decimal("5")}
    measures = {row.measure: row for row in report.measures}
    assert measures["effective_cost"].actual == Decimal("2290")  # llama + other
    assert measures["billed_cost"].actual == Decimal("250")
    assert report.plan == Decimal("2300.00")
    assert report.reconciliation.difference == 0
    foundation = next(t for t in report.teams if t.team == world.team)
    assert foundation.mixed_measures


def test_breakdowns_by_provider_service_and_charge_category(world, february):
    report = finance_report(world)
    providers = {row.name: row.amounts.effective_cost for row in report.by_provider}
    assert providers == {"AWS": Decimal("2350"), "CoreWeave": Decimal("200")}
    categories = {
        row.name: row.amounts.effective_cost for row in report.by_charge_category
    }
    assert categories == {"Usage": Decimal("2490"), "Tax": Decimal("60")}
    services = {row.name for row in report.by_service_category}
    assert "Compute" in services


def test_the_trend_covers_twelve_months_ending_with_the_report(world, february):
    trend = finance_report(world).trend
    assert [m.month for m in (trend[0], trend[-1])] == [date(2025, 3, 1), FEBRUARY]
    assert trend[-1].actual == Decimal("2550")
    assert trend[-2].actual == Decimal("400")
    assert trend[-1].plan == Decimal("2300.00")


def test_the_json_has_every_amount_as_an_exact_decimal_string(world, february):
    data = finance_report(world).as_json()
    assert data["month"] == "2026-02"
    assert data["status"] == "open"
    # Exact: the stored decimals as they are (PostgreSQL keeps 11 places).
    assert Decimal(data["totals"]["effective"]) == Decimal("2550")
    assert Decimal(data["totals"]["unallocated"]) == Decimal("60")
    assert data["reconciliation"]["difference"] == "0"
    team = next(t for t in data["teams"] if t["slug"] == "foundation")
    llama = next(p for p in team["projects"] if p["slug"] == "llama-sft")
    assert (llama["plan"], Decimal(llama["actual"]), llama["measure"]) == (
        "2000.00",
        Decimal("2200"),
        "effective_cost",
    )


def test_a_lead_sees_only_their_teams_and_no_unallocated_spend(client, world, february):
    client.force_login(world.lead)
    data = client.get(reverse("report_json", args=[FEBRUARY])).json()
    assert [t["slug"] for t in data["teams"]] == ["foundation"]
    # llama 2200 + billed-proj 200
    assert Decimal(data["totals"]["effective"]) == Decimal("2400")
    assert data["unallocated"]["effective"] == "0"
    page = client.get(reverse("report_detail", args=[FEBRUARY])).content.decode()
    assert "Secret Pretrain" not in page


def test_an_outsider_sees_their_own_team_only(client, world, february):
    client.force_login(world.outsider)
    data = client.get(reverse("report_json", args=[FEBRUARY])).json()
    assert [t["slug"] for t in data["teams"]] == ["other"]
    assert Decimal(data["totals"]["effective"]) == Decimal("90")


def test_a_month_that_has_not_begun_is_not_found(client, world):
    client.force_login(world.finance)
    assert (
        client.get(reverse("report_detail", args=[date(2026, 4, 1)])).status_code == 404
    )


def test_the_list_shows_each_month_with_spend_or_a_plan(client, world, february):
    client.force_login(world.finance)
    months = client.get(reverse("report_list")).context["months"]
    assert [row["month"] for row in months] == [
        date(2026, 3, 1),
        FEBRUARY,
        date(2026, 1, 1),
    ]
    assert months[1]["actual"] == Decimal("2550")
    assert months[1]["plan"] == Decimal("2300.00")


def test_the_page_links_each_project_and_run_and_notes_each_variance(
    client, world, february
):
    """The screen links rows to their pages and sets notes in small type; the PDF
    prints the same words plainly (reports/test_exports.py reads them there)."""
    client.force_login(world.finance)
    page = client.get(reverse("report_detail", args=[FEBRUARY])).content.decode()
    project_url = world.project.get_absolute_url()
    run_url = reverse("run_detail", args=[world.project.slug, world.run.pk])
    assert f'<a href="{project_url}">{world.project.name}</a>' in page
    assert f'<a href="{run_url}">{world.run.name}</a>' in page
    assert '<span class="muted small">to date</span>' in page
