"""Reads for finance's pages: the organisation seen team by team."""

from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from django.http import Http404
from django.utils import timezone

from accounts.models import Team, User
from accounts.selectors import teams_visible_to
from budgets.models import Alert
from budgets.selectors import AlertCounts, alert_counts_by
from budgets.services import (
    BURN_WINDOW_DAYS,
    DEFAULT_MEASURE,
    ProjectSummary,
    TeamVariance,
    project_summaries,
    team_variance,
)
from core.currencies import ZERO
from projects.models import Project


@dataclass(frozen=True)
class TeamTotals:
    team: Team
    projects: int
    variance: TeamVariance
    month_by_measure: dict[str, Decimal]  # each project's spend in its measure
    alerts: AlertCounts

    @property
    def month_actual(self) -> Decimal | None:
        """This month's spend; None when the projects track different measures
        (then `month_by_measure` has each apart)."""
        if len(self.month_by_measure) > 1:
            return None
        return next(iter(self.month_by_measure.values()), ZERO)


def team_totals(*, as_of: date) -> list[TeamTotals]:
    """Every team's budgets, plan, actual and forecast added up over its projects,
    measure by measure, with this month's spend and its active alerts: a fixed
    number of queries."""
    by_team = defaultdict(list)
    projects = list(Project.objects.select_related("team"))
    for summary in project_summaries(
        projects=projects, as_of=as_of, days=BURN_WINDOW_DAYS
    ):
        by_team[summary.project.team_id].append(summary)
    alerts = alert_counts_by(
        Alert.objects.filter(project__isnull=False), "project__team"
    )
    return [
        TeamTotals(
            team=team,
            projects=len(by_team[team.pk]),
            variance=team_variance(by_team[team.pk]),
            month_by_measure=_month_by_measure(by_team[team.pk]),
            alerts=alerts.get(team.pk, AlertCounts()),
        )
        for team in Team.objects.all()
    ]


def _month_by_measure(summaries: list[ProjectSummary]) -> dict[str, Decimal]:
    totals: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for summary in summaries:
        budget = summary.budget
        totals[budget.cost_measure if budget else DEFAULT_MEASURE] += (
            summary.month_actual
        )
    return dict(sorted(totals.items()))


def report_scope(user: User) -> dict:
    """Whose spend a user's monthly report holds: their teams', or everything."""
    return {"teams": teams_visible_to(user), "whole_organisation": user.sees_everything}


def report_month_or_404(month: date) -> date:
    if month > timezone.now().date():
        raise Http404("That month has not begun.")
    return month
