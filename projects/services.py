"""Changes to projects that concern the project alone."""

from django.utils import timezone

from projects.models import Project


def project_archive(*, project: Project) -> bool:
    """Archive a finished project: its pages, spend and reports stay, but it leaves
    the dashboard and alert evaluation. False when it already was archived."""
    archived = Project.objects.filter(pk=project.pk, archived_at__isnull=True).update(
        archived_at=timezone.now()
    )
    project.refresh_from_db(fields=["archived_at"])
    return bool(archived)


def project_unarchive(*, project: Project) -> bool:
    """Bring an archived project back; False when it was not archived."""
    restored = Project.objects.filter(pk=project.pk, archived_at__isnull=False).update(
        archived_at=None
    )
    project.refresh_from_db(fields=["archived_at"])
    return bool(restored)
