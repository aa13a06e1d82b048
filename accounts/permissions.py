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
from projects.models import Project


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
