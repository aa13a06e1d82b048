"""Reads of teams, scoped to the user by the permission rules."""

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404

from accounts.models import Organisation, Team, User
from accounts.permissions import visible_to


def teams_visible_to(user: User) -> QuerySet[Team]:
    return visible_to(user, Team.objects.all(), team="")


def team_get_for_user(user: User, slug: str) -> Team:
    return get_object_or_404(teams_visible_to(user), slug=slug)


def organisation_name() -> str:
    """The name `bootstrap` gave the organisation; empty before (the demo)."""
    return Organisation.objects.values_list("name", flat=True).first() or ""
