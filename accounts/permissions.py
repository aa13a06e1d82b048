"""Who may see and change what: the rules, in one place, for the portal and the API.

Team leads and members see their teams' rows; finance and admins see everything.
Outsiders get 404 for an object (its existence is not confirmed); a user who can see an
object but not change it gets 403. Each app's selectors apply these rules to its own
models (`projects_visible_to`, `alert_get_for_user`, ...), so this module knows no
model beyond users and teams.
"""

from typing import Protocol, TypeVar

from django.core.exceptions import PermissionDenied
from django.db.models import Model, QuerySet

from accounts.models import Membership, Team, User

M = TypeVar("M", bound=Model)


class TeamOwned(Protocol):
    team_id: int


def visible_to(user: User, rows: QuerySet[M], *, team: str) -> QuerySet[M]:
    """The rows a user may see: all of them for finance and admins, else those whose
    team (reached by the lookup path `team`, "" for teams themselves) they belong to."""
    if user.sees_everything:
        return rows
    path = f"{team}__memberships__user" if team else "memberships__user"
    return rows.filter(**{path: user})


def user_can_approve_plans(user: User) -> bool:
    return user.sees_everything


def require_plan_approver(user: User) -> None:
    if not user_can_approve_plans(user):
        raise PermissionDenied("Finance approves budgets and their revisions.")


def user_can_edit_plan(user: User, project: TeamOwned) -> bool:
    """Team leads of the project's team and admins edit plans; finance only reads."""
    if user.is_admin:
        return True
    return Membership.objects.filter(
        user=user, team_id=project.team_id, role=Membership.Role.LEAD
    ).exists()


def require_plan_editor(user: User, project: TeamOwned) -> None:
    if not user_can_edit_plan(user, project):
        raise PermissionDenied("Only the team's leads can change this plan.")


def teams_user_can_create_projects_for(user: User) -> QuerySet[Team]:
    """Leads create projects for the teams they lead; finance and admins for any."""
    if user.sees_everything:
        return Team.objects.all()
    return Team.objects.filter(
        memberships__user=user, memberships__role=Membership.Role.LEAD
    )


def require_project_creator(user: User, team: Team | None = None) -> None:
    """Refuses who may create no project (or none for `team`); call it after the team
    was read through `team_get_for_user`, so that outsiders get 404 first."""
    teams = teams_user_can_create_projects_for(user)
    if team is not None:
        teams = teams.filter(pk=team.pk)
    if not teams.exists():
        raise PermissionDenied("Team leads, finance and admins create projects.")


def require_organisation_view(user: User) -> None:
    if not user.sees_everything:
        raise PermissionDenied("The organisation overview is for finance and admins.")


def require_billing_operator(user: User) -> None:
    """Billing sources, uploads and import history belong to finance and admins."""
    if not user.sees_everything:
        raise PermissionDenied("Billing sources are managed by finance and admins.")


def require_source_editor(user: User) -> None:
    """Finance sees billing sources; admins add and change them, since a source holds
    credentials and decides where they are sent."""
    if not user.is_admin:
        raise PermissionDenied("Admins add and change billing sources.")


def require_invoice_approver(user: User) -> None:
    """Approving an invoice makes it cost: finance and admins decide."""
    if not user.sees_everything:
        raise PermissionDenied("Compute invoices are approved by finance and admins.")


def require_journal_reader(user: User) -> None:
    """The chargeback journal posts every team's spend: finance and admins only."""
    if not user.sees_everything:
        raise PermissionDenied("The chargeback journal is for finance and admins.")


def require_audit_reader(user: User) -> None:
    """Who did what, across every team: finance and admins."""
    if not user.sees_everything:
        raise PermissionDenied("The audit log is for finance and admins.")


def user_can_close_months(user: User) -> bool:
    return user.sees_everything


def require_month_closer(user: User) -> None:
    """Closing and reopening a month belong to finance (and admins)."""
    if not user_can_close_months(user):
        raise PermissionDenied("Finance closes and reopens months.")


def require_allocation_editor(user: User) -> None:
    """Allocation rules move costs between projects, and so between teams: admins
    change them, as in Django admin."""
    if not user.is_admin:
        raise PermissionDenied("Admins change allocation rules.")
