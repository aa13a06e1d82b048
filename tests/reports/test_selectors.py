"""Finance's organisation overview, team by team."""

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from budgets.selectors import AlertCounts
from reports.selectors import team_totals
from tests.conftest import make_budget, make_project, make_spend

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def mid_january(time_machine):
    time_machine.move_to(datetime(2026, 1, 20, 12, tzinfo=UTC), tick=False)


def test_team_totals_add_up_each_teams_projects_and_nobody_elses(world):
    second = make_project(world.team, world.lead, "second")
    make_budget(second, {date(2026, 1, 1): "500.00"})
    make_spend(world.project, date(2025, 12, 30), "100")
    make_spend(world.project, date(2026, 1, 5), "300")
    make_spend(second, date(2026, 1, 6), "600")
    make_spend(world.other_project, date(2026, 1, 7), "50")
    make_spend(None, date(2026, 1, 8), "999")

    totals = {row.team.slug: row for row in team_totals(as_of=date(2026, 1, 20))}

    foundation = totals["foundation"]
    assert foundation.projects == 2
    assert foundation.variance.budget == Decimal("3500.00")
    assert foundation.variance.actual_to_date == Decimal("1000")
    assert foundation.month_actual == Decimal("900")
    assert foundation.variance.over == 1  # `second` spent 600 of 500
    assert foundation.alerts == AlertCounts(open=1, acknowledged=0)
    other = totals["other"]
    assert (other.projects, other.month_actual, other.alerts) == (
        1,
        Decimal("50"),
        AlertCounts(),
    )
