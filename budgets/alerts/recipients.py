"""Who hears of an alert, recorded as one notification per alert and person."""

from collections import defaultdict
from functools import cached_property

from django.db.models import Q

from accounts.models import Membership, User
from budgets.models import Alert, Notification
from projects.models import Project


def notifications_record(alerts: list[Alert]) -> list[int]:
    """One notification per alert and person who should hear of it."""
    if not alerts:
        return []
    recipients = Recipients([a.project_id for a in alerts if a.project_id])
    notifications = [
        Notification(
            alert=alert,
            user=user,
            channel=Notification.Channel.DIGEST
            if user.alert_delivery == User.AlertDelivery.DIGEST
            else Notification.Channel.IMMEDIATE,
        )
        for alert in alerts
        for user in recipients.of(alert)
    ]
    return [n.pk for n in Notification.objects.bulk_create(notifications)]


class Recipients:
    """Who hears of a project's alerts: its owner, its team's leads, and finance users
    who watch the team. Finance and admins hear of stale sources. Nobody who turned
    alert emails off."""

    def __init__(self, project_ids: list[int]) -> None:
        listening = User.objects.filter(is_active=True).exclude(
            alert_delivery=User.AlertDelivery.OFF
        )
        projects = Project.objects.filter(pk__in=project_ids).select_related("owner")
        self.projects = {p.pk: p for p in projects}
        team_ids = {p.team_id for p in self.projects.values()}
        self.by_team: dict[int, dict[int, User]] = defaultdict(dict)
        leads = Membership.objects.filter(
            team_id__in=team_ids, role=Membership.Role.LEAD, user__in=listening
        ).select_related("user")
        for membership in leads:
            self.by_team[membership.team_id][membership.user_id] = membership.user
        watchers = User.watched_teams.through.objects.filter(
            team_id__in=team_ids,
            user__in=listening.filter(role__in=[User.Role.FINANCE, User.Role.ADMIN]),
        ).select_related("user")
        for watch in watchers:
            self.by_team[watch.team_id][watch.user_id] = watch.user
        self.listening = listening

    @cached_property
    def operators(self) -> list[User]:
        return list(
            self.listening.filter(Q(role=User.Role.FINANCE) | Q(role=User.Role.ADMIN))
        )

    def of(self, alert: Alert) -> list[User]:
        if alert.project_id is None:
            return self.operators
        project = self.projects[alert.project_id]
        people = dict(self.by_team[project.team_id])
        owner = project.owner
        if owner.is_active and owner.alert_delivery != User.AlertDelivery.OFF:
            people[owner.pk] = owner
        return list(people.values())
