"""Plan vs actual on hand-computed cases, with frozen time.

Spend enters as CostRecords and reaches DailyCost through the rollup service, as
production data does.
"""

from datetime import date, timedelta
from decimal import Decimal

import pytest

from budgets import selectors
from budgets.services import (
    Status,
    budget_plan_to_date,
    project_cumulative_by_month,
    project_months,
    project_summaries,
    project_summary,
    project_variance,
    run_summaries,
    run_variance,
    team_variance,
)
from tests.conftest import make_budget, make_project, make_run, make_spend

pytestmark = pytest.mark.django_db


def spend(project, day: date, amount: str, run=None, gpu_hours=None) -> None:
    gpu = (
        {"consumed_quantity": gpu_hours, "consumed_unit": "GPU-Hours"}
        if gpu_hours
        else {}
    )
    make_spend(project, day, amount, training_run=run, **gpu)


@pytest.fixture
def project(world):
    """Budget 3,100 in January (100 a day) and 2,800 in February (100 a day)."""
    project = make_project(
        world.team, world.lead, "jan-feb", end_date=date(2026, 2, 28)
    )
    make_budget(project, {date(2026, 1, 1): "3100", date(2026, 2, 1): "2800"})
    return project


@pytest.mark.parametrize(
    ("as_of", "planned"),
    [
        (date(2025, 12, 31), "0"),
        (date(2026, 1, 1), "100"),
        (date(2026, 1, 31), "3100"),
        (date(2026, 2, 1), "3200"),
        (date(2026, 2, 14), "4500"),
        (date(2026, 2, 28), "5900"),
        (date(2026, 6, 30), "5900"),
    ],
)
def test_plan_to_date_spreads_each_month_over_its_days(project, as_of, planned):
    assert budget_plan_to_date(budget=project.budget, as_of=as_of) == Decimal(planned)


def test_a_project_starting_mid_month_spreads_that_month_over_its_own_days(world):
    project = make_project(
        world.team,
        world.lead,
        "mid-month",
        start_date=date(2026, 1, 16),
        end_date=date(2026, 1, 31),
    )
    budget = make_budget(project, {date(2026, 1, 1): "1600"})
    assert budget_plan_to_date(budget=budget, as_of=date(2026, 1, 15)) == 0
    assert budget_plan_to_date(budget=budget, as_of=date(2026, 1, 20)) == Decimal("500")
    assert budget_plan_to_date(budget=budget, as_of=date(2026, 1, 31)) == Decimal(
        "1600"
    )


def test_variance_compares_actual_with_plan_to_date(project):
    spend(project, date(2026, 1, 10), "2000.00")
    spend(project, date(2026, 2, 1), "1500.50")
    spend(project, date(2026, 2, 15), "999.99")  # after as_of: not counted
    variance = project_variance(project=project, as_of=date(2026, 2, 14))
    assert variance.plan_to_date == Decimal("4500")
    assert variance.actual_to_date == Decimal("3500.50")
    assert variance.variance == Decimal("-999.50")
    assert variance.variance_percent == Decimal("-22.2")
    assert variance.used_percent == Decimal("59.3")
    assert variance.status == Status.ON_TRACK


def test_spending_beyond_the_tolerance_puts_a_project_at_risk(project):
    spend(project, date(2026, 1, 5), "3600.00")
    variance = project_variance(project=project, as_of=date(2026, 1, 31))
    assert variance.variance_percent == Decimal("16.1")  # tolerance is 10%
    assert variance.status == Status.AT_RISK
    assert variance.reason == (
        "Project Jan Feb is 16% over plan to date: $3,600 spent vs $3,100 planned"
    )


def test_a_burn_rate_that_would_overrun_the_budget_puts_a_project_at_risk(project):
    # On plan to date, but the last seven days burned 300 a day: 28 more days at that
    # rate end at 3,100 + 28 * 300 = 11,500, far over 5,900.
    for offset in range(7):
        spend(project, date(2026, 1, 25) + timedelta(days=offset), "300")
    spend(project, date(2026, 1, 2), "1000")
    variance = project_variance(project=project, as_of=date(2026, 1, 31))
    assert variance.actual_to_date == Decimal("3100")
    assert variance.burn_rate == Decimal("300")
    assert variance.forecast_from_burn == Decimal("11500")
    assert variance.forecast_from_plan == Decimal("5900")
    assert variance.status == Status.AT_RISK
    assert "forecast to finish at $11,500" in variance.reason


def test_spending_more_than_the_whole_budget_is_over(project):
    spend(project, date(2026, 1, 3), "6000")
    variance = project_variance(project=project, as_of=date(2026, 1, 31))
    assert variance.status == Status.OVER
    assert variance.reason == (
        "Project Jan Feb is 2% over budget: $6,000 spent of $5,900"
    )


def test_a_zero_budget_is_on_track_until_money_is_spent(world):
    project = make_project(world.team, world.lead, "zero")
    make_budget(project, {})
    quiet = project_variance(project=project, as_of=date(2026, 3, 1))
    assert quiet.status == Status.ON_TRACK
    assert quiet.variance_percent is None and quiet.used_percent is None
    spend(project, date(2026, 3, 1), "25")
    spent = project_variance(project=project, as_of=date(2026, 3, 1))
    assert spent.status == Status.OVER
    assert spent.reason == "Project Zero has no budget but has spent $25"


def test_a_project_without_a_budget_has_no_variance(world):
    project = make_project(world.team, world.lead, "unplanned")
    assert project_variance(project=project, as_of=date(2026, 3, 1)) is None


def test_a_run_over_its_gpu_hours_says_so_in_words(project):
    run = make_run(
        project,
        name="llama-70b-sft",
        planned_gpu_hours=Decimal("412"),
        rate_per_gpu_hour=Decimal("2.49"),
        end_date=date(2026, 1, 10),
    )
    spend(project, date(2026, 1, 4), "1416.81", run=run, gpu_hours=Decimal("569"))
    variance = run_variance(run=run, as_of=date(2026, 1, 10), tolerance=Decimal("10"))
    assert variance.total == Decimal("1025.88")  # 412 GPU-hours at 2.49
    assert variance.status == Status.OVER
    assert variance.reason == (
        "Run llama-70b-sft is 38% over plan: "
        "569 of 412 planned GPU-hours used at $2.49/GPU-hour"
    )


def test_a_run_is_planned_evenly_over_its_days(project):
    run = make_run(
        project,
        name="short",
        planned_gpu_hours=Decimal("100"),
        rate_per_gpu_hour=Decimal("2"),
        end_date=date(2026, 1, 10),
    )
    spend(project, date(2026, 1, 2), "90", run=run, gpu_hours=Decimal("45"))
    variance = run_variance(run=run, as_of=date(2026, 1, 5), tolerance=Decimal("10"))
    assert variance.plan_to_date == Decimal("100")
    assert variance.actual_to_date == Decimal("90")
    assert variance.status == Status.ON_TRACK


def test_the_cumulative_chart_stops_actuals_at_the_current_month(project):
    spend(project, date(2026, 1, 10), "1000")
    chart = project_cumulative_by_month(project=project, as_of=date(2026, 1, 20))
    assert chart["labels"] == ["Jan 2026", "Feb 2026"]
    assert chart["plan"] == [Decimal("3100"), Decimal("5900")]
    assert chart["actual"] == [Decimal("1000"), None]


def test_a_run_over_its_gpu_hours_is_over_even_when_its_cost_is_not(project):
    run = make_run(
        project,
        name="cheap-hours",
        planned_gpu_hours=Decimal("100"),
        rate_per_gpu_hour=Decimal("2"),
        end_date=date(2026, 1, 10),
    )
    spend(project, date(2026, 1, 2), "150", run=run, gpu_hours=Decimal("120"))
    variance = run_variance(run=run, as_of=date(2026, 1, 10), tolerance=Decimal("10"))
    assert variance.actual_to_date < variance.total
    assert variance.status == Status.OVER
    assert variance.reason.startswith("Run cheap-hours is 20% over plan: 120 of 100")


@pytest.fixture
def progressing_run(project):
    """1,000 planned (500 GPU-hours at 2.00) over ten days, 1,000 steps planned."""
    return make_run(
        project,
        name="dpo",
        external_id="dpo",
        planned_gpu_hours=Decimal("500"),
        rate_per_gpu_hour=Decimal("2.00"),
        start_date=date(2026, 1, 1),
        end_date=date(2026, 1, 10),
        progress_unit="steps",
        units_planned=Decimal("1000"),
        units_done=Decimal("400"),
    )


def test_earned_value_of_a_run_that_reports_progress(project, progressing_run):
    for day in range(1, 6):
        spend(project, date(2026, 1, day), "100", run=progressing_run)
    summary = run_summaries(runs=[progressing_run], as_of=date(2026, 1, 5))[0]
    ev = summary.earned_value
    assert (ev.planned_value, ev.earned_value, ev.actual_cost) == (
        Decimal("500"),
        Decimal("400"),
        Decimal("500"),
    )
    assert (ev.cpi, ev.spi, ev.eac) == (Decimal("0.80"), Decimal("0.80"), 1250)
    assert ev.explanation("USD") == (
        "Each $1.00 spent has bought $0.80 of planned work (CPI 0.80); the work is "
        "behind schedule (SPI 0.80); at this rate the run will cost $1,250 in all "
        "(EAC)"
    )
    # The plan and the burn rate both say 1,000; the progress says 1,250: the worse.
    variance = summary.variance
    assert (variance.forecast_from_plan, variance.forecast_from_burn) == (1000, 1000)
    assert variance.forecast == 1250
    assert variance.status == Status.AT_RISK
    assert variance.reason == (
        "Run dpo is forecast to finish at $1,250 from the progress reported, 25% "
        "over its $1,000 budget"
    )


def test_a_run_without_progress_has_no_earned_value(project):
    run = make_run(project)
    spend(project, date(2026, 1, 2), "90", run=run)
    summary = run_summaries(runs=[run], as_of=date(2026, 1, 5))[0]
    assert summary.earned_value is None
    assert summary.variance.forecast_basis in {
        "the remaining plan",
        "the burn rate of the last 7 days",
    }


def test_a_run_ahead_of_schedule_and_under_cost_is_on_track(project, progressing_run):
    progressing_run.units_done = Decimal("700")
    progressing_run.save()
    for day in range(1, 6):
        spend(project, date(2026, 1, day), "80", run=progressing_run)
    ev = run_summaries(runs=[progressing_run], as_of=date(2026, 1, 5))[0].earned_value
    assert (ev.cpi, ev.spi) == (Decimal("1.75"), Decimal("1.40"))
    assert "ahead of schedule" in ev.explanation("USD")


def test_a_team_adds_up_its_projects(world, project):
    spend(project, date(2026, 1, 10), "1000")
    summaries = project_summaries(
        projects=[project, world.project], as_of=date(2026, 1, 31)
    )
    team = team_variance(summaries)
    assert team.budget == Decimal("5900") + Decimal("3000")
    assert team.plan_to_date == Decimal("3100") + Decimal("1000")
    assert team.actual_to_date == Decimal("1000")
    assert team.variance_percent == Decimal("-75.6")


def test_provisional_spend_is_counted_apart_from_final(project):
    spend(project, date(2026, 1, 10), "1000")
    make_spend(project, date(2026, 1, 11), "250", is_provisional=True)
    summary = project_summary(project=project, as_of=date(2026, 1, 31))
    assert summary.variance.actual_to_date == Decimal("1250")
    assert (summary.provisional, summary.final) == (Decimal("250"), Decimal("1000"))


def test_each_month_shows_plan_actual_and_variance(project):
    spend(project, date(2026, 1, 10), "3410")
    months = project_months(project=project, as_of=date(2026, 1, 31))
    january, february = months
    assert (january.plan, january.actual, january.variance_percent) == (
        Decimal("3100"),
        Decimal("3410"),
        Decimal("10.0"),
    )
    assert february.actual is None and february.variance is None


@pytest.mark.parametrize(
    ("as_of", "queries"),
    [
        (date(2026, 1, 20), 5),
        (date(2026, 1, 31), 4),  # a whole month: the monthly rollup alone
    ],
)
def test_summaries_of_many_projects_cost_the_same_queries_as_of_one(
    world, project, django_assert_num_queries, as_of, queries
):
    others = [make_project(world.team, world.lead, f"p{index}") for index in range(5)]
    with django_assert_num_queries(queries):
        project_summaries(projects=[project], as_of=as_of)
    with django_assert_num_queries(queries):
        project_summaries(projects=[project, *others], as_of=as_of)


def test_a_month_read_whole_from_the_monthly_rollup_gives_the_daily_figures(
    project,
):
    """On a month's last day, spend to date and the month come from the monthly
    rollup alone: the same figures as the days of the month give the day before."""
    run = make_run(project)
    spend(project, date(2025, 12, 30), "40", run=run, gpu_hours="2")
    spend(project, date(2026, 1, 3), "100", run=run, gpu_hours="5")
    spend(project, date(2026, 1, 30), "7", run=run)
    make_spend(project, date(2026, 1, 30), "11", training_run=run, is_provisional=True)
    make_spend(project, date(2026, 1, 30), "5000", billing_currency="JPY")

    def figures(as_of: date) -> selectors.SpendFigures:
        return selectors.spend_figures(scope="project", ids=[project.pk], as_of=as_of)[
            project.pk
        ]

    whole, days = figures(date(2026, 1, 31)), figures(date(2026, 1, 30))
    assert whole.to_date == days.to_date
    assert whole.to_date["effective_cost"] == Decimal("158")
    assert whole.month_to_date == days.month_to_date
    assert whole.month_to_date["effective_cost"] == Decimal("118")
    assert whole.provisional == days.provisional
    assert whole.provisional["effective_cost"] == Decimal("11")
    assert whole.gpu_hours == days.gpu_hours == Decimal("7")


def test_spend_without_an_fx_rate_stays_out_of_the_actual_and_is_shown_apart(
    project,
):
    run = make_run(project)
    spend(project, date(2026, 1, 10), "1000", run=run)
    make_spend(
        project, date(2026, 1, 10), "5000", training_run=run, billing_currency="JPY"
    )
    make_spend(
        project,
        date(2026, 1, 11),
        "7000",
        training_run=run,
        billing_currency="JPY",
        is_provisional=True,
    )
    as_of = date(2026, 1, 31)
    summary = project_summary(project=project, as_of=as_of)
    assert summary.variance.actual_to_date == Decimal("1000")
    assert (summary.month_actual, summary.provisional) == (
        Decimal("1000"),
        Decimal("0"),
    )
    assert sum(summary.daily.values()) == Decimal("1000")
    january = project_months(project=project, as_of=as_of)[0]
    assert january.actual == Decimal("1000")
    (run_summary,) = run_summaries(runs=[run], as_of=as_of)
    assert run_summary.variance.actual_to_date == Decimal("1000")
    assert selectors.actual_by_day(
        measure="effective_cost",
        start=date(2026, 1, 1),
        end=date(2026, 2, 1),
        project=project,
    ) == {date(2026, 1, 10): Decimal("1000")}
    assert selectors.spend_breakdown(
        measure="effective_cost", group_by="billing_currency", project=project
    ) == [{"billing_currency": "USD", "total": Decimal("1000")}]
    assert selectors.unconverted_totals(project=project) == {"JPY": Decimal("12000")}


def test_the_month_in_progress_is_compared_with_its_plan_to_date(project):
    """On 10 January, 10 of January's 31 days are planned: 1,000 of 3,100."""
    spend(project, date(2026, 1, 5), "1500")
    january, february = project_months(project=project, as_of=date(2026, 1, 10))
    assert (january.plan, january.plan_to_date, january.variance_percent) == (
        Decimal("3100"),
        Decimal("1000"),
        Decimal("50.0"),  # not -51.6% against the whole month
    )
    assert february.plan_to_date is None
