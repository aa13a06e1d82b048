"""The lifecycle of alerts, following from the rules' observations, in one pass:

- an alert fires at the highest threshold crossed, once per rule, scope, period and
  threshold: the database refuses a second one (see `Alert.Meta.constraints`);
- spend rising past a higher threshold escalates it: the new alert replaces the open
  one and notifies again; nothing else re-notifies;
- a change of the rule's thresholds (a project's override, the budget's tolerance,
  the rule switched off) moves the active alert to the highest threshold now in force
  that the level reaches, or resolves it, quietly: it is not news about spend;
- it resolves when the level falls a margin under its threshold, so that it does not
  flap, or when its period ends.

The whole pass runs in one transaction with a fixed number of queries, whatever the
number of projects; only the writes grow with what changed.
"""

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import cast

from django.db import IntegrityError, connection, transaction
from django.db.models import Max
from django.utils import timezone

from accounts.models import User
from budgets.alerts.recipients import notifications_record
from budgets.alerts.rules import Observation, observe
from budgets.models import Acknowledgement, Alert, AlertKind
from budgets.webhooks import webhook_deliveries_record
from core.currencies import ZERO
from core.dates import month_start
from core.tasks import enqueue_after_commit

# How far under its threshold a level must fall before the alert resolves.
RESOLVE_MARGIN: dict[str, Decimal] = {
    AlertKind.BUDGET_USED: Decimal("5"),
    AlertKind.FORECAST_OVER: Decimal("5"),
    AlertKind.VARIANCE: Decimal("5"),
    AlertKind.RUN_OVER: Decimal("5"),
    AlertKind.SPEND_ANOMALY: Decimal("0.5"),
    AlertKind.STALE_SOURCE: ZERO,
}
ACTIVE = (Alert.Status.OPEN, Alert.Status.ACKNOWLEDGED)
MONTHLY_KINDS = (AlertKind.BUDGET_USED, AlertKind.FORECAST_OVER, AlertKind.VARIANCE)


@dataclass
class Outcome:
    evaluated: int = 0
    fired: int = 0
    escalated: int = 0
    resolved: int = 0
    emails: int = 0
    notifications: list[int] = field(default_factory=list)

    def as_json(self) -> dict[str, int]:
        return {
            "evaluated": self.evaluated,
            "fired": self.fired,
            "escalated": self.escalated,
            "resolved": self.resolved,
            "emails": self.emails,
        }


def alerts_evaluate(*, now: datetime | None = None, send_later: bool = True) -> Outcome:
    """Evaluate every rule for every project, run and source, and record the
    notifications owed. With `send_later`, a task sends them once this commits;
    otherwise the caller sends them (`notifications_send_pending`)."""
    from budgets.tasks import notifications_send  # tasks import this module

    now = now or timezone.now()
    as_of = now.date()
    with transaction.atomic():
        outcome = _apply(observe(now, as_of), now, as_of)
        if send_later and outcome.notifications:
            enqueue_after_commit(notifications_send)
    return outcome


def _apply(observations: list[Observation], now: datetime, as_of: date) -> Outcome:
    """Turn readings into alert changes, in batches.

    Only a threshold not yet reached in the period fires or escalates, and emails.
    Moving back to a threshold already reached in the period (after a credit, or a
    plan raised by a revision) reopens its alert silently: what is active always
    matches the level, and nobody hears the same news twice.
    """
    outcome = Outcome(evaluated=len(observations))
    active = {
        (a.kind, a.scope_key, a.period): a
        for a in Alert.objects.filter(status__in=ACTIVE)
    }
    reached = _highest_reached(observations)
    to_fire: list[Alert] = []
    replacing: dict[int, Alert] = {}  # an active alert's id -> the alert after it
    moved: set[int] = set()  # of those, the ones whose rule changed its thresholds
    quietly: list[Alert] = []  # reopened (or created) without an email
    to_resolve: dict[int, str] = {}
    to_refresh: list[Alert] = []
    for observation in observations:
        current = active.pop(observation.key, None)
        crossed = observation.crossed()
        if observation.waiting_for:
            if current and current.waiting_for != observation.waiting_for:
                current.waiting_for = observation.waiting_for
                current.updated_at = now
                to_refresh.append(current)
            continue
        top = reached.get(observation.key)
        news = crossed is not None and (top is None or crossed > top)
        if current is None:
            if crossed is not None:
                alert = _new_alert(observation, crossed, now)
                (to_fire if news else quietly).append(alert)
        elif current.threshold not in observation.thresholds:
            if crossed is None:
                to_resolve[current.pk] = _rule_changed(observation)
            else:
                replacing[current.pk] = _after(current, observation, crossed, news, now)
                moved.add(current.pk)
        elif crossed is not None and crossed > current.threshold:
            replacing[current.pk] = _after(current, observation, crossed, news, now)
        elif observation.value < current.threshold - RESOLVE_MARGIN[observation.kind]:
            to_resolve[current.pk] = (
                f"Back to {observation.value:.0f} under the "
                f"{current.threshold:.0f} threshold"
            )
            if crossed is not None:  # still past a lower one: that one is active
                quietly.append(_new_alert(observation, crossed, now))
        elif _refreshed(current, observation, now):
            to_refresh.append(current)
    for alert in active.values():  # no longer observed: the period or scope ended
        to_resolve[alert.pk] = _ended(alert, as_of)
    outcome.resolved = len(_resolve(to_resolve, now))
    # A replacement goes ahead only if this pass closed the alert it replaces: of two
    # workers evaluating at once, one does.
    closed = _resolve(
        {
            pk: _moved(alert) if pk in moved else "Escalated"
            for pk, alert in replacing.items()
        },
        now,
    )
    escalations = [replacing[pk] for pk in closed if replacing[pk].escalated_from_id]
    quietly += [replacing[pk] for pk in closed if not replacing[pk].escalated_from_id]
    fired = _insert(to_fire)
    escalated = _insert(escalations)
    _reopen(quietly, now)
    outcome.fired, outcome.escalated = len(fired), len(escalated)
    if to_refresh:
        Alert.objects.bulk_update(
            to_refresh,
            ["value", "subject", "reason", "severity", "waiting_for", "updated_at"],
        )
    outcome.notifications = notifications_record(fired + escalated)
    webhook_deliveries_record(fired + escalated)
    return outcome


def _highest_reached(observations: list[Observation]) -> dict[tuple, Decimal]:
    """The highest threshold each rule, scope and period has fired at so far."""
    periods = {observation.period for observation in observations}
    rows = (
        Alert.objects.filter(period__in=periods)
        .values_list("kind", "scope_key", "period")
        .annotate(top=Max("threshold"))
        .order_by()
    )
    return {(kind, scope, period): top for kind, scope, period, top in rows}


def _refreshed(current: Alert, observation: Observation, now: datetime) -> bool:
    """Bring an active alert's figures up to date; False if nothing moved."""
    subject, reason, severity = observation.describe(current.threshold)
    fresh = (observation.value, subject[:300], reason, severity, "")
    if fresh == _shown(current):
        return False
    (
        current.value,
        current.subject,
        current.reason,
        current.severity,
        current.waiting_for,
    ) = fresh
    current.updated_at = now
    return True


def _reopen(alerts: list[Alert], now: datetime) -> None:
    """Make these alerts active again without notifying anyone: create the ones that
    never fired (a first pass that went straight past them), reopen the others."""
    created = {(a.kind, a.scope_key, a.period) for a in _insert(alerts)}
    for alert in alerts:
        if (alert.kind, alert.scope_key, alert.period) in created:
            continue
        try:
            with transaction.atomic():
                Alert.objects.filter(
                    kind=alert.kind,
                    scope_key=alert.scope_key,
                    period=alert.period,
                    threshold=alert.threshold,
                    status=Alert.Status.RESOLVED,
                ).update(
                    status=Alert.Status.OPEN,
                    resolved_at=None,
                    resolution="",
                    value=alert.value,
                    subject=alert.subject,
                    reason=alert.reason,
                    severity=alert.severity,
                    updated_at=now,
                )
        except IntegrityError:
            pass  # another worker made one active for this period first


def _shown(alert: Alert) -> tuple:
    """What an alert tells its readers; rewritten only when the figures move."""
    return (alert.value, alert.subject, alert.reason, alert.severity, alert.waiting_for)


def _after(
    current: Alert,
    observation: Observation,
    crossed: Decimal,
    news: bool,
    now: datetime,
) -> Alert:
    """The alert that replaces an active one. Escalated means spend got worse: the
    last reading was short of the threshold reached now; a threshold moved under the
    level by a change of the rule is no news."""
    worse = news and not observation.reaches(current.value, crossed)
    return _new_alert(
        observation, crossed, now, escalated_from=current if worse else None
    )


def _rule_changed(observation: Observation) -> str:
    if not observation.thresholds:
        return "The rule was switched off"
    return (
        f"The rule's thresholds changed: {_number(observation.value)} is under the "
        f"{_number(min(observation.thresholds))} now in force"
    )


def _moved(alert: Alert) -> str:
    return f"The rule's thresholds changed: now at {_number(alert.threshold)}"


def _number(value: Decimal) -> str:
    return f"{value.normalize():f}"


def _ended(alert: Alert, as_of: date) -> str:
    if alert.kind in MONTHLY_KINDS and alert.period < month_start(as_of):
        return f"{alert.period:%B %Y} has ended"
    if alert.kind == AlertKind.SPEND_ANOMALY:
        return "The day has passed" if alert.period < as_of else "No longer observed"
    return "No longer applies"


def _new_alert(
    observation: Observation,
    threshold: Decimal,
    now: datetime,
    escalated_from: Alert | None = None,
) -> Alert:
    subject, reason, severity = observation.describe(threshold)
    return Alert(
        kind=observation.kind,
        scope_key=observation.scope_key,
        period=observation.period,
        threshold=threshold,
        project_id=observation.project_id,
        training_run_id=observation.training_run_id,
        source_id=observation.source_id,
        severity=severity,
        status=Alert.Status.OPEN,
        subject=subject[:300],
        reason=reason,
        value=observation.value,
        # Kept as fired: refreshing the alert later rewrites its subject and reason,
        # never these, so a late email still says what fired it.
        figures={
            "as_of": now.date().isoformat(),
            "subject": subject[:300],
            "reason": reason,
            **observation.figures,
        },
        escalated_from=escalated_from,
        fired_at=now,
        updated_at=now,
    )


def _resolve(resolutions: dict[int, str], now: datetime) -> list[int]:
    """Close the given active alerts; the ids this pass closed, not another."""
    if not resolutions:
        return []
    table = Alert._meta.db_table
    placeholders = ", ".join(["%s"] * len(resolutions))
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET status = %s, resolved_at = %s, updated_at = %s "
            f"WHERE id IN ({placeholders}) AND status IN (%s, %s) RETURNING id",
            [Alert.Status.RESOLVED, now, now, *resolutions, *ACTIVE],
        )
        closed = [row[0] for row in cursor.fetchall()]
    texts = [Alert(pk=pk, resolution=resolutions[pk][:300]) for pk in closed]
    Alert.objects.bulk_update(texts, ["resolution"])
    return closed


def _insert(alerts: list[Alert]) -> list[Alert]:
    """Insert alerts that do not exist yet; the ones this pass inserted. A conflict on
    either unique constraint means the alert fired before, or just now elsewhere."""
    fields = [f for f in Alert._meta.concrete_fields if not f.primary_key]
    size = max(1, connection.ops.bulk_batch_size(fields, alerts))
    created = []
    for start in range(0, len(alerts), size):
        created += _insert_batch(alerts[start : start + size], fields)
    return created


def _insert_batch(alerts: list[Alert], fields: list) -> list[Alert]:
    columns = ", ".join(connection.ops.quote_name(cast(str, f.column)) for f in fields)
    row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    params = [
        f.get_db_prep_save(getattr(alert, f.attname), connection)
        for alert in alerts
        for f in fields
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {Alert._meta.db_table} ({columns}) VALUES "
            f"{', '.join([row] * len(alerts))} ON CONFLICT DO NOTHING "
            f"RETURNING id, kind, scope_key, period, threshold",
            params,
        )
        inserted = {
            (kind, scope_key, _as_date(period), Decimal(str(threshold))): pk
            for pk, kind, scope_key, period, threshold in cursor.fetchall()
        }
    created = []
    for alert in alerts:
        pk = inserted.get((alert.kind, alert.scope_key, alert.period, alert.threshold))
        if pk is not None:
            alert.pk = pk
            created.append(alert)
    return created


def _as_date(value) -> date:
    return date.fromisoformat(value) if isinstance(value, str) else value


@transaction.atomic
def alert_acknowledge(*, alert: Alert, user: User, note: str) -> bool:
    """Someone is on it: the alert stays until it resolves. Every acknowledgement is
    kept with its note; the first names who took the alert on. False if it resolved
    in the meantime."""
    active = Alert.objects.select_for_update().filter(pk=alert.pk, status__in=ACTIVE)
    locked = active.first()
    if locked is None:
        return False
    now = timezone.now()
    if locked.status == Alert.Status.OPEN:
        locked.status = Alert.Status.ACKNOWLEDGED
        locked.acknowledged_by, locked.acknowledged_at = user, now
        locked.save(
            update_fields=["status", "acknowledged_by", "acknowledged_at", "updated_at"]
        )
    Acknowledgement.objects.create(alert=locked, user=user, at=now, note=note)
    return True
