"""What a fresh install still lacks, in the order a new admin does it: the empty
pages of the portal show these steps, each with a link where the person can act."""

from dataclasses import dataclass

from django.urls import reverse

from accounts.models import Team, User
from billing.models import BillingSource, ImportRun
from projects.models import Project


@dataclass(frozen=True)
class Step:
    text: str
    done: bool
    url: str = ""  # empty: someone else does it (named in `who`)
    link_text: str = ""
    who: str = ""


def setup_steps(user: User) -> list[Step]:
    """The four steps of a new install, each done or not; empty once all are done.
    Four small queries, made only by a page that is empty."""
    admin, finance = user.is_admin, user.sees_everything
    steps = [
        Step(
            "Connect a billing source",
            BillingSource.objects.exists(),
            reverse("admin:billing_billingsource_add") if admin else "",
            "Add a billing source",
            "" if admin else "an admin",
        ),
        Step(
            "Create a team and add its people",
            Team.objects.exists(),
            reverse("admin:accounts_team_add") if admin else "",
            "Create a team",
            "" if admin else "an admin",
        ),
        Step(
            "Create a project, with its budget and an allocation rule",
            Project.objects.exists(),
            reverse("admin:projects_project_add") if admin else "",
            "Create a project",
            "" if admin else "an admin",
        ),
        Step(
            "Load the first costs: upload an export or sync a source",
            ImportRun.objects.exists(),
            reverse("upload") if finance else "",
            "Upload an export",
            "" if finance else "finance or an admin",
        ),
    ]
    return [] if all(step.done for step in steps) else steps
