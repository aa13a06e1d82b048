"""Alert rules: each turns the figures of a scope (a project, a run, a source) into an
*observation*, a level such as the percent of the month's plan used, compared with the
rule's thresholds. Defaults, the organisation's rules and a project's own overrides.

While a billing source that feeds a project is stale, the project's rules wait: they
neither fire nor resolve, and the open alerts say what they wait for.
"""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from statistics import median
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from billing.models import BillingSource, CostRecord
from budgets.alerts.figures import project_figures, run_figures
from budgets.models import Alert, AlertKind, AlertRule, Budget
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

DEFAULT_THRESHOLDS: dict[str, list[int]] = {
    AlertKind.BUDGET_USED: [50, 80, 100],  # percent of the month's plan
    AlertKind.FORECAST_OVER: [],  # percent over budget; none given: the tolerance
    AlertKind.VARIANCE: [],  # percent over plan to date; none given: the tolerance
    AlertKind.RUN_OVER: [100],  # percent of planned cost or GPU-hours
    AlertKind.SPEND_ANOMALY: [3],  # times the usual daily spend
    AlertKind.STALE_SOURCE: [48],  # hours without new data
}
ANOMALY_BASELINE_DAYS = 14
ANOMALY_MIN_HISTORY_DAYS = 7  # quiet for a project's first week of spend
SOURCE_FEEDS_DAYS = 35  # a source feeds a project if it billed it this recently


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
    figures: dict[str, Any] = field(default_factory=dict)  # for the alert's emails

    @property
    def key(self) -> tuple[str, str, date]:
        return (self.kind, self.scope_key, self.period)

    def crossed(self) -> Decimal | None:
        """The highest threshold the level reaches."""
        reached = [t for t in self.thresholds if self.reaches(self.value, t)]
        return max(reached, default=None)

    def reaches(self, value: Decimal, threshold: Decimal) -> bool:
        return value > threshold or (not self.strict and value == threshold)


@dataclass
class Texts:
    """Words for an observation at a threshold: a subject line, a reason that names
    the threshold in force, and the severity that threshold carries."""

    subject: str
    reason: str
    critical_from: Decimal | None = None  # the threshold from which it is critical
    unit: str = "%"
    tolerance: Decimal | None = None  # the budget's, when it is the default threshold

    def __call__(self, threshold: Decimal) -> tuple[str, str, str]:
        critical = self.critical_from is not None and threshold >= self.critical_from
        severity = Alert.Severity.CRITICAL if critical else Alert.Severity.WARNING
        named = f"{threshold.normalize():f}{self.unit}"
        if threshold == self.tolerance:
            named += ", the budget's tolerance"
        return self.subject, f"{self.reason} (threshold: {named})", severity


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
        "figures": project_figures(summary),
    }
    currency = summary.currency
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
                    critical_from=ZERO if variance.status == Status.OVER else None,
                    tolerance=tolerance,
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
    lines = summary.plan.lines if summary.plan else []
    month = month_start(as_of)
    month_plan = plan_to_date(budget=budget, lines=lines, as_of=as_of) - plan_to_date(
        budget=budget, lines=lines, as_of=month - timedelta(days=1)
    )
    if month_plan <= 0:
        return []
    over = _level(summary.month_actual - month_plan, month_plan)
    currency = summary.currency
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
                f"month: {text}",
                tolerance=budget.tolerance_percent,
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
    project, currency = summary.project, summary.currency
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
                    unit="×",
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
            figures=run_figures(summary),
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
                    critical_from=ZERO,
                    unit=" hours",
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
    stale = stale_sources(list(BillingSource.objects.delivering()), rules, now)
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


def observe(now: datetime, as_of: date) -> list[Observation]:
    rules = Rules()
    projects = list(
        Project.objects.exclude(status=Project.Status.CANCELLED)
        .filter(archived_at__isnull=True)
        .select_related("team")
    )
    summaries = project_summaries(projects=projects, as_of=as_of)
    runs = TrainingRun.objects.filter(project__in=projects).exclude(
        status=TrainingRun.Status.CANCELLED
    )
    sources = list(BillingSource.objects.delivering())
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
