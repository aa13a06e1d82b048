"""Who may see and change what: the one place the portal and the API ask.

Team leads and members see their teams' projects; finance and admins see everything.
Outsiders get 404 for an object (its existence is not confirmed); a user who can see an
object but not change it gets 403.
"""

from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404

from accounts.models import Membership, Team, User
from billing.models import ComputeInvoice
from budgets.models import Alert, BudgetRevision
from projects.models import Project, TrainingRun


def teams_visible_to(user: User) -> QuerySet[Team]:
    if user.sees_everything:
        return Team.objects.all()
    return Team.objects.filter(memberships__user=user)


def projects_visible_to(user: User) -> QuerySet[Project]:
    if user.sees_everything:
        return Project.objects.all()
    return Project.objects.filter(team__memberships__user=user)


def invoices_visible_to(user: User) -> QuerySet[ComputeInvoice]:
    if user.sees_everything:
        return ComputeInvoice.objects.all()
    return ComputeInvoice.objects.filter(project__team__memberships__user=user)


def alerts_visible_to(user: User) -> QuerySet[Alert]:
    """Alerts of the projects a user sees; alerts about billing sources are for the
    finance and admin users who run them."""
    if user.sees_everything:
        return Alert.objects.all()
    return Alert.objects.filter(project__team__memberships__user=user)


def team_get_for_user(user: User, slug: str) -> Team:
    return get_object_or_404(teams_visible_to(user), slug=slug)


def project_get_for_user(user: User, slug: str) -> Project:
    return get_object_or_404(
        projects_visible_to(user).select_related("team", "owner"), slug=slug
    )


def invoice_get_for_user(user: User, pk: int) -> ComputeInvoice:
    return get_object_or_404(
        invoices_visible_to(user).select_related("project", "training_run"), pk=pk
    )


def run_get_for_user(user: User, slug: str, pk: int) -> TrainingRun:
    project = project_get_for_user(user, slug)
    return get_object_or_404(project.runs.select_related("project__team"), pk=pk)


def alert_get_for_user(user: User, pk: int) -> Alert:
    return get_object_or_404(
        alerts_visible_to(user).select_related(
            "project__team", "training_run", "source", "acknowledged_by"
        ),
        pk=pk,
    )


def revision_get_for_user(user: User, slug: str, pk: int) -> BudgetRevision:
    project = project_get_for_user(user, slug)
    return get_object_or_404(
        BudgetRevision.objects.select_related(
            "budget__project", "proposed_by", "decided_by"
        ),
        budget__project=project,
        pk=pk,
    )


def user_can_approve_plans(user: User) -> bool:
    return user.sees_everything


def require_plan_approver(user: User) -> None:
    if not user_can_approve_plans(user):
        raise PermissionDenied("Finance approves budgets and their revisions.")


def user_can_edit_plan(user: User, project: Project) -> bool:
    """Team leads of the project's team and admins edit plans; finance only reads."""
    if user.is_admin:
        return True
    return Membership.objects.filter(
        user=user, team_id=project.team_id, role=Membership.Role.LEAD
    ).exists()


def require_plan_editor(user: User, project: Project) -> None:
    if not user_can_edit_plan(user, project):
        raise PermissionDenied("Only the team's leads can change this plan.")


def require_organisation_view(user: User) -> None:
    if not user.sees_everything:
        raise PermissionDenied("The organisation overview is for finance and admins.")


def require_billing_operator(user: User) -> None:
    """Billing sources, uploads and import history belong to finance and admins."""
    if not user.sees_everything:
        raise PermissionDenied("Billing sources are managed by finance and admins.")
