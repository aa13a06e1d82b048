"""Reads of projects and runs, scoped to the user by the permission rules."""

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404

from accounts.models import User
from accounts.permissions import visible_to
from projects.models import Project, TrainingRun


def projects_visible_to(user: User) -> QuerySet[Project]:
    return visible_to(user, Project.objects.all(), team="team")


def project_get_for_user(user: User, slug: str) -> Project:
    return get_object_or_404(
        projects_visible_to(user).select_related("team", "owner"), slug=slug
    )


def run_get_for_user(user: User, slug: str, pk: int) -> TrainingRun:
    project = project_get_for_user(user, slug)
    return get_object_or_404(project.runs.select_related("project__team"), pk=pk)


def runs_visible_to(user: User) -> QuerySet[TrainingRun]:
    return TrainingRun.objects.filter(project__in=projects_visible_to(user))
