"""Alert rules, evaluated for every project, run and billing source in one pass.

Each rule turns the figures of a scope (a project, a run, a source) into an
*observation*: a level, such as the percent of the month's plan used, compared with the
rule's thresholds. The lifecycle of the alerts follows from the observations:

- an alert fires at the highest threshold crossed, once per rule, scope, period and
  threshold: the database refuses a second one (see `Alert.Meta.constraints`);
- crossing a higher threshold escalates it: the new alert replaces the open one and
  notifies again; nothing else re-notifies;
- it resolves when the level falls a margin under its threshold, so that it does not
  flap, or when its period ends;
- while a billing source that feeds a project is stale, the project's rules wait: they
  neither fire nor resolve, and the open alerts say what they wait for.

The whole pass runs in one transaction with a fixed number of queries, whatever the
number of projects; only the writes grow with what changed.
"""

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from functools import cached_property
from statistics import median
from typing import Any, cast

from django.db import IntegrityError, connection, transaction
from django.db.models import Max, Q
from django.utils import timezone

from accounts.models import Membership, User
from billing.models import BillingSource, CostRecord
from budgets.models import Alert, AlertKind, AlertRule, Budget, Notification
from budgets.services import (
    HUNDRED,
    ProjectSummary,
    RunSummary,
    Status,
    plan_to_date,
    project_summaries,
    run_summaries,
)
from core.currencies import ZERO, money
from core.dates import month_start
from projects.models import Project, TrainingRun

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLDS: dict[str, list[int]] = {
    AlertKind.BUDGET_USED: [50, 80, 100],  # percent of the month's plan
    AlertKind.FORECAST_OVER: [],  # percent over budget; none given: the tolerance
    AlertKind.VARIANCE: [],  # percent over plan to date; none given: the tolerance
    AlertKind.RUN_OVER: [100],  # percent of planned cost or GPU-hours
    AlertKind.SPEND_ANOMALY: [3],  # times the usual daily spend
    AlertKind.STALE_SOURCE: [48],  # hours without new data
}
# How far under its threshold a level must fall before the alert resolves.
RESOLVE_MARGIN: dict[str, Decimal] = {
    AlertKind.BUDGET_USED: Decimal("5"),
    AlertKind.FORECAST_OVER: Decimal("5"),
    AlertKind.VARIANCE: Decimal("5"),
    AlertKind.RUN_OVER: Decimal("5"),
    AlertKind.SPEND_ANOMALY: Decimal("0.5"),
    AlertKind.STALE_SOURCE: Decimal("0"),
}
ANOMALY_BASELINE_DAYS = 14
ANOMALY_MIN_HISTORY_DAYS = 7  # quiet for a project's first week of spend
SOURCE_FEEDS_DAYS = 35  # a source feeds a project if it billed it this recently
ACTIVE = (Alert.Status.OPEN, Alert.Status.ACKNOWLEDGED)
MONTHLY_KINDS = (AlertKind.BUDGET_USED, AlertKind.FORECAST_OVER, AlertKind.VARIANCE)


@dataclass
class Observation:
    """One rule's reading of one scope and period."""

    kind: str
    scope_key: str
    period: date
    value: Decimal
    thresholds: list[Decimal]
    describe: "Texts"
    project_id: int | None = None
    training_run_id: int | None = None
    source_id: int | None = None
    waiting_for: str = ""
    strict: bool = False  # "beyond" a threshold rather than "at" it

    @property
    def key(self) -> tuple[str, str, date]:
        return (self.kind, self.scope_key, self.period)

    def crossed(self) -> Decimal | None:
        """The highest threshold the level reaches."""
        reached = [
            t
            for t in self.thresholds
            if self.value > t or (not self.strict and self.value == t)
        ]
        return max(reached, default=None)


@dataclass
class Texts:
    """Words for an observation at a threshold: a subject line, a reason, and the
    severity that threshold carries."""

    subject: str
    reason: str
    critical_from: Decimal | None = None  # the threshold from which it is critical

    def __call__(self, threshold: Decimal) -> tuple[str, str, str]:
        critical = self.critical_from is not None and threshold >= self.critical_from
        severity = Alert.Severity.CRITICAL if critical else Alert.Severity.WARNING
        return self.subject, self.reason, severity


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


# Rules -------------------------------------------------------------------------


class Rules:
    """The thresholds of every rule for every project: defaults, overridden by the
    organisation's rows, overridden by a project's rows."""

    def __init__(self) -> None:
        self.rows = {
            (rule.kind, rule.project_id): rule for rule in AlertRule.objects.all()
        }

    def thresholds(
        self, kind: str, project: Project | None = None, tolerance: Decimal = ZERO
    ) -> list[Decimal]:
        own = self.rows.get((kind, project.pk)) if project else None
        default = self.rows.get((kind, None))
        rule = own or default
        if rule and not rule.is_enabled:
            return []
        values = (
            (own.thresholds if own else None)
            or (default.thresholds if default else None)
            or DEFAULT_THRESHOLDS[kind]
        )
        if not values and kind in (AlertKind.FORECAST_OVER, AlertKind.VARIANCE):
            values = [tolerance]
        return sorted(Decimal(str(value)) for value in values)


def _pct(value: Decimal) -> str:
    return f"{value.quantize(Decimal('1'), ROUND_HALF_UP)}%"


def _level(part: Decimal, whole: Decimal) -> Decimal:
    return (part * HUNDRED / whole).quantize(Decimal("0.01"), ROUND_HALF_UP)


def _project_observations(
    summary: ProjectSummary, rules: Rules, as_of: date
) -> list[Observation]:
    project, budget, variance = summary.project, summary.budget, summary.variance
    if budget is None or variance is None:
        return []
    scope: dict[str, Any] = {
        "scope_key": f"project:{project.pk}",
        "project_id": project.pk,
    }
    currency = budget.currency
    month = month_start(as_of)
    observations = []
    if summary.month_plan > 0:
        used = _level(summary.month_actual, summary.month_plan)
        observations.append(
            Observation(
                kind=AlertKind.BUDGET_USED,
                period=month,
                value=used,
                thresholds=rules.thresholds(AlertKind.BUDGET_USED, project),
                describe=Texts(
                    subject=(
                        f"{project.name}: {money(summary.month_actual, currency)} "
                        f"spent, {_pct(used)} of the {month:%B} plan"
                    ),
                    reason=(
                        f"Project {project.name} has spent "
                        f"{money(summary.month_actual, currency)} in {month:%B %Y}, "
                        f"{_pct(used)} of the {money(summary.month_plan, currency)} "
                        f"planned for the month"
                    ),
                    critical_from=HUNDRED,
                ),
                **scope,
            )
        )
    tolerance = budget.tolerance_percent
    if variance.total > 0:
        over = _level(variance.forecast - variance.total, variance.total)
        observations.append(
            Observation(
                kind=AlertKind.FORECAST_OVER,
                period=month,
                value=over,
                strict=True,
                thresholds=[
                    t
                    for t in rules.thresholds(
                        AlertKind.FORECAST_OVER, project, tolerance
                    )
                    if t >= 0
                ],
                describe=Texts(
                    subject=(
                        f"{project.name}: forecast {money(variance.forecast, currency)}"
                        f", {_pct(over)} over its {money(variance.total, currency)} "
                        f"budget"
                    ),
                    reason=(
                        f"Project {project.name} is forecast to finish at "
                        f"{money(variance.forecast, currency)} from "
                        f"{variance.forecast_basis}, {_pct(over)} over its "
                        f"{money(variance.total, currency)} budget; "
                        f"{money(variance.actual_to_date, currency)} is spent so far"
                    ),
                    critical_from=Decimal(0)
                    if variance.status == Status.OVER
                    else None,
                ),
                **scope,
            )
        )
    observations += _variance_observation(summary, budget, rules, as_of, scope)
    observations += _anomaly_observations(summary, budget, rules, as_of, scope)
    return observations


def _variance_observation(
    summary: ProjectSummary,
    budget: Budget,
    rules: Rules,
    as_of: date,
    scope: dict[str, Any],
) -> list[Observation]:
    """Month-to-date actual against the month's plan to date."""
    project = summary.project
    lines = list(budget.lines.all())
    month = month_start(as_of)
    month_plan = plan_to_date(budget=budget, lines=lines, as_of=as_of) - plan_to_date(
        budget=budget, lines=lines, as_of=month - timedelta(days=1)
    )
    if month_plan <= 0:
        return []
    over = _level(summary.month_actual - month_plan, month_plan)
    currency = budget.currency
    text = (
        f"{money(summary.month_actual, currency)} spent vs "
        f"{money(month_plan, currency)} planned for {month:%B} to date"
    )
    return [
        Observation(
            kind=AlertKind.VARIANCE,
            period=month,
            value=over,
            strict=True,
            thresholds=rules.thresholds(
                AlertKind.VARIANCE, project, budget.tolerance_percent
            ),
            describe=Texts(
                subject=f"{project.name}: {_pct(over)} over the {month:%B} plan, "
                f"{money(summary.month_actual, currency)} spent",
                reason=f"Project {project.name} is {_pct(over)} over its plan this "
                f"month, beyond its {_pct(budget.tolerance_percent)} tolerance: {text}",
            ),
            **scope,
        )
    ]


def _anomaly_observations(
    summary: ProjectSummary,
    budget: Budget,
    rules: Rules,
    as_of: date,
    scope: dict[str, Any],
) -> list[Observation]:
    """Yesterday and today against the median of the 14 days before each: a median,
    so that one earlier spike does not raise the bar; none in a first week of spend."""
    project, currency = summary.project, budget.currency
    observations = []
    for day in (as_of - timedelta(days=1), as_of):
        baseline_days = [
            day - timedelta(days=offset)
            for offset in range(1, ANOMALY_BASELINE_DAYS + 1)
        ]
        history = [summary.daily.get(d, ZERO) for d in baseline_days]
        if sum(1 for amount in history if amount > 0) < ANOMALY_MIN_HISTORY_DAYS:
            continue
        usual = median(history)
        spent = summary.daily.get(day, ZERO)
        if usual <= 0:
            continue
        times = (spent / usual).quantize(Decimal("0.01"), ROUND_HALF_UP)
        observations.append(
            Observation(
                kind=AlertKind.SPEND_ANOMALY,
                period=day,
                value=times,
                thresholds=rules.thresholds(AlertKind.SPEND_ANOMALY, project),
                describe=Texts(
                    subject=f"{project.name}: {money(spent, currency)} spent on "
                    f"{day:%-d %b}, {times:.1f}× the usual day "
                    f"(+{(times - 1) * HUNDRED:.0f}%)",
                    reason=f"Project {project.name} spent {money(spent, currency)} on "
                    f"{day:%-d %B %Y}, {times:.1f} times its usual "
                    f"{money(usual, currency)} a day (the median of the 14 days "
                    f"before)",
                ),
                **scope,
            )
        )
    return observations


def _run_observation(summary: RunSummary, rules: Rules) -> list[Observation]:
    run, variance = summary.run, summary.variance
    levels = []
    if run.planned_cost > 0:
        levels.append(_level(variance.actual_to_date, run.planned_cost))
    if run.planned_gpu_hours > 0:
        levels.append(_level(summary.gpu_hours, run.planned_gpu_hours))
    if not levels:
        return []
    level = max(levels)
    if variance.status == Status.OVER:
        reason = variance.reason
    else:
        reason = (
            f"Run {run.name} has used {_pct(level)} of its plan: "
            f"{money(variance.actual_to_date, run.currency)} of "
            f"{money(run.planned_cost, run.currency)}"
        )
    return [
        Observation(
            kind=AlertKind.RUN_OVER,
            scope_key=f"run:{run.pk}",
            period=run.start_date,
            value=level,
            thresholds=rules.thresholds(AlertKind.RUN_OVER, run.project),
            describe=Texts(
                subject=f"{run.project.name}: run {run.name} at {_pct(level)} of "
                f"plan, {money(variance.actual_to_date, run.currency)} spent",
                reason=reason,
                critical_from=HUNDRED,
            ),
            project_id=run.project_id,
            training_run_id=run.pk,
        )
    ]


def _source_observations(
    sources: list[BillingSource], rules: Rules, now: datetime
) -> list[Observation]:
    thresholds = rules.thresholds(AlertKind.STALE_SOURCE)
    observations = []
    for source in sources:
        if source.last_sync_at is None:
            continue  # never delivered yet: nothing to be stale against
        hours = Decimal((now - source.last_sync_at).total_seconds() / 3600).quantize(
            Decimal("0.01"), ROUND_HALF_UP
        )
        observations.append(
            Observation(
                kind=AlertKind.STALE_SOURCE,
                scope_key=f"source:{source.pk}",
                period=source.last_sync_at.date(),
                value=hours,
                thresholds=thresholds,
                describe=Texts(
                    subject=f"Billing source {source.name}: no successful import "
                    f"for {hours:.0f} hours",
                    reason=f"{source.name} last imported successfully "
                    f"{source.last_sync_at:%-d %b %Y %H:%M} UTC, {hours:.0f} hours "
                    f"ago; alerts of the projects it bills wait until it is fresh",
                    critical_from=Decimal(0),
                ),
                source_id=source.pk,
            )
        )
    return observations


def stale_sources(
    sources: list[BillingSource], rules: Rules, now: datetime
) -> dict[int, BillingSource]:
    thresholds = rules.thresholds(AlertKind.STALE_SOURCE)
    if not thresholds:
        return {}
    limit = now - timedelta(hours=float(thresholds[0]))
    return {s.pk: s for s in sources if s.last_sync_at and s.last_sync_at < limit}


def waiting_reasons(
    project_ids: list[int], stale: dict[int, BillingSource], as_of: date
) -> dict[int, str]:
    """Why each project's rules wait: the stale sources that bill it."""
    if not stale:
        return {}
    feeds = (
        CostRecord.objects.filter(
            source_id__in=stale,
            project_id__in=project_ids,
            charge_period_start__gte=datetime.combine(
                as_of - timedelta(days=SOURCE_FEEDS_DAYS), time.min, tzinfo=UTC
            ),
        )
        .values_list("project_id", "source_id")
        .distinct()
    )
    names: dict[int, list[str]] = defaultdict(list)
    for project_id, source_id in feeds:
        names[project_id].append(stale[source_id].name)
    return {
        project_id: "waiting for fresh data from " + ", ".join(sorted(found))
        for project_id, found in names.items()
    }


def project_waiting_reason(project: Project, *, now: datetime | None = None) -> str:
    """For a page: why this project's alerts wait, or an empty string."""
    now = now or timezone.now()
    rules = Rules()
    stale = stale_sources(
        list(BillingSource.objects.filter(is_enabled=True)), rules, now
    )
    return waiting_reasons([project.pk], stale, now.date()).get(project.pk, "")


# Per-project overrides -----------------------------------------------------------

UNITS = {
    AlertKind.BUDGET_USED: "% of the month's plan",
    AlertKind.FORECAST_OVER: "% over budget",
    AlertKind.VARIANCE: "% over the month's plan to date",
    AlertKind.RUN_OVER: "% of a run's plan",
    AlertKind.SPEND_ANOMALY: "× the usual day",
    AlertKind.STALE_SOURCE: "hours",
}
PROJECT_KINDS = [kind for kind in AlertKind if kind != AlertKind.STALE_SOURCE]


@dataclass(frozen=True)
class ProjectRule:
    kind: str
    enabled: bool
    thresholds: list
    default: str  # the organisation's setting, in words

    @property
    def label(self) -> str:
        return AlertKind(self.kind).label

    @property
    def unit(self) -> str:
        return UNITS[AlertKind(self.kind)]


def project_alert_rules(project: Project) -> list[ProjectRule]:
    """Each rule as it applies to a project, with the organisation's default beside."""
    rows = {
        (r.kind, r.project_id): r
        for r in AlertRule.objects.filter(Q(project=project) | Q(project__isnull=True))
    }
    rules = []
    for kind in PROJECT_KINDS:
        default_row = rows.get((kind, None))
        own = rows.get((kind, project.pk))
        default = (
            default_row.thresholds if default_row else None
        ) or DEFAULT_THRESHOLDS[kind]
        default_text = ", ".join(str(v) for v in default) or "the budget's tolerance"
        if default_row and not default_row.is_enabled:
            default_text = "off"
        rules.append(
            ProjectRule(
                kind=kind,
                enabled=own.is_enabled
                if own
                else not (default_row and not default_row.is_enabled),
                thresholds=own.thresholds if own else [],
                default=default_text,
            )
        )
    return rules


@transaction.atomic
def project_alert_rules_save(
    *, project: Project, settings: dict[str, tuple[bool, list]]
) -> None:
    """Keep a project's own rule only where it differs from the organisation's."""
    defaults = {r.kind: r for r in AlertRule.objects.filter(project__isnull=True)}
    for kind, (enabled, thresholds) in settings.items():
        default = defaults.get(kind)
        default_enabled = default.is_enabled if default else True
        if enabled == default_enabled and not thresholds:
            AlertRule.objects.filter(kind=kind, project=project).delete()
            continue
        AlertRule.objects.update_or_create(
            kind=kind,
            project=project,
            defaults={"is_enabled": enabled, "thresholds": thresholds},
        )


# Evaluation --------------------------------------------------------------------


def alerts_evaluate(*, now: datetime | None = None, send_later: bool = True) -> Outcome:
    """Evaluate every rule for every project, run and source, and record the
    notifications owed. With `send_later`, a task sends them once this commits;
    otherwise the caller sends them (`notifications_send_pending`)."""
    from budgets.tasks import notifications_send  # tasks import this module

    now = now or timezone.now()
    as_of = now.date()
    with transaction.atomic():
        outcome = _apply(_observe(now, as_of), now, as_of)
        if send_later and outcome.notifications:
            transaction.on_commit(notifications_send.delay)
    return outcome


def _observe(now: datetime, as_of: date) -> list[Observation]:
    rules = Rules()
    projects = list(
        Project.objects.exclude(status=Project.Status.CANCELLED).select_related("team")
    )
    summaries = project_summaries(projects=projects, as_of=as_of)
    runs = TrainingRun.objects.filter(project__in=projects).exclude(
        status=TrainingRun.Status.CANCELLED
    )
    sources = list(BillingSource.objects.filter(is_enabled=True))
    waiting = waiting_reasons(
        [p.pk for p in projects], stale_sources(sources, rules, now), as_of
    )
    observations = []
    for summary in summaries:
        observations += _project_observations(summary, rules, as_of)
    budgets = {s.project.pk: s.budget for s in summaries if s.budget}
    for run_summary in run_summaries(
        runs=runs.select_related("project"), as_of=as_of, budgets=budgets
    ):
        observations += _run_observation(run_summary, rules)
    for observation in observations:
        if observation.project_id is not None:
            observation.waiting_for = waiting.get(observation.project_id, "")
    observations += _source_observations(sources, rules, now)
    return observations


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
        elif crossed is not None and crossed > current.threshold:
            replacing[current.pk] = _new_alert(
                observation, crossed, now, escalated_from=current if news else None
            )
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
    closed = _resolve(dict.fromkeys(replacing, "Escalated"), now)
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
    outcome.notifications = _record_notifications(fired + escalated)
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


def alert_acknowledge(*, alert: Alert, user: User, note: str) -> bool:
    """Someone is on it: the alert stays until it resolves, with their note. False if
    it resolved in the meantime."""
    acknowledged = Alert.objects.filter(pk=alert.pk, status__in=ACTIVE).update(
        status=Alert.Status.ACKNOWLEDGED,
        acknowledged_by=user,
        acknowledged_at=timezone.now(),
        acknowledgement_note=note,
        updated_at=timezone.now(),
    )
    return bool(acknowledged)


# Recipients --------------------------------------------------------------------


def _record_notifications(alerts: list[Alert]) -> list[int]:
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
