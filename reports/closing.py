"""Month close: finance freezes a month's report, and restatements that arrive later
show as adjustments instead of rewriting it.

Closing stores every file of the whole organisation's report (JSON, PDF, CSV, XLSX and
the journal) with a SHA-256 of each; from then on the month's page, its JSON and its
downloads are those files. A provider that restates the month changes the rollup, not
the files: the difference (the live figures less the closed ones, per project, in
billed and effective cost) shows on the closed month as post-close adjustments, and
is carried into the first open month after it as a line of its own. When that month
closes in turn, the line is part of its snapshot and recorded on its close, so a
later month carries only what changed after that.

Closing is refused while an enabled billing source has failed or is not final through
the month's end, unless finance gives a reason; reopening always needs one. A month
reopens only while no later month is closed, so no closed report has carried figures
of a month that is open again.
"""

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import QuerySet, Sum
from django.db.models.functions import TruncMonth
from django.utils import timezone

from accounts.models import Team, User
from accounts.permissions import require_month_closer
from billing.models import BillingSource, DailyCost
from core import audit
from core.currencies import ZERO
from core.dates import month_start, next_month
from core.exports import spreadsheet_safe
from reports import exports
from reports.models import MonthClose, SnapshotFile
from reports.services import Adjustment, MonthlyReport, monthly_report

# Every file of the report, stored when the month closes and served while it is.
SNAPSHOT_RENDERERS: dict[str, Callable[[MonthlyReport], bytes]] = {
    "json": exports.render_json,
    "pdf": exports.render_pdf,
    "csv": exports.render_csv,
    "xlsx": exports.render_xlsx,
    "journal": exports.render_journal,
}
# Keys of adjustments that are not a project's slug (slugs have no spaces).
UNALLOCATED = "(unallocated)"
UNLISTED = "(no project row)"
KEY_NAMES = {
    UNALLOCATED: "Unallocated",
    UNLISTED: "Projects not in the closed report",
}
# Any number, so that month closes take advisory locks no other code takes.
_LOCK_SPACE = 7_310_502


class MonthCloseRefused(Exception):
    """The month cannot be closed or reopened; the message says why, in words."""

    def __init__(self, message: str, reasons: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.reasons = list(reasons)


class MonthAlreadyClosed(MonthCloseRefused):
    pass


@dataclass(frozen=True)
class CloseEvent:
    """A close, forced close or reopen, as the report lists them."""

    kind: str  # "close", "forced_close" or "reopen"
    user: User
    at: datetime
    reason: str

    @property
    def label(self) -> str:
        return {
            "close": "Closed",
            "forced_close": "Closed with sources not final",
            "reopen": "Reopened",
        }[self.kind]


def month_close_in_force(*, month: date) -> MonthClose | None:
    return (
        MonthClose.objects.filter(month=month_start(month), reopened_at__isnull=True)
        .select_related("closed_by")
        .first()
    )


def month_close_blockers(*, month: date) -> list[str]:
    """Why the month is not ready to close, one sentence per billing source: it
    failed last time, or it is not final through the month's end."""
    month = month_start(month)
    end = datetime.combine(next_month(month), time.min, tzinfo=UTC)
    reasons = []
    for source in BillingSource.objects.delivering().order_by("name"):
        final = source.data_complete_through
        if source.last_error:
            error = source.last_error.strip().splitlines()[0][:200]
            reasons.append(f"{source.name} failed: {error}")
        elif final is None:
            reasons.append(f"{source.name} has no final data yet")
        elif final < end:
            reasons.append(
                f"{source.name} is final only through {final:%-d %B %Y}, "
                f"not through the end of {month:%B}"
            )
    return reasons


def month_close_check(*, month: date, user: User, reason: str = "") -> list[str]:
    """Refuse a close that cannot go ahead, before any work is done: the user is not
    finance, the month has not ended or is closed already, or a source is not final
    and no reason says why. Returns what is not final (the reason overrides it)."""
    require_month_closer(user)
    month = month_start(month)
    if next_month(month) > timezone.now().date():
        raise MonthCloseRefused(
            f"{month:%B %Y} has not ended: close it once it is over."
        )
    _refuse_if_closed(month)
    blockers = month_close_blockers(month=month)
    if blockers and not reason.strip():
        raise MonthCloseRefused(
            f"{month:%B %Y} is not ready to close: {'; '.join(blockers)}. "
            "Give a reason to close it anyway.",
            blockers,
        )
    return blockers


@transaction.atomic
def month_close(*, month: date, user: User, reason: str = "") -> MonthClose:
    """Close the month: store its report's files as they stand now. Refused while a
    source is not final (unless `reason` says why), and when already closed."""
    require_month_closer(user)
    month = month_start(month)
    reason = reason.strip()
    _lock(month)
    blockers = month_close_check(month=month, user=user, reason=reason)
    report = open_report(month=month, teams=Team.objects.all(), whole_organisation=True)
    now = timezone.now()
    report.status, report.closed_on = "closed", now.date()
    files = {fmt: render(report) for fmt, render in SNAPSHOT_RENDERERS.items()}
    try:
        with transaction.atomic():
            close = MonthClose.objects.create(
                month=month,
                closed_by=user,
                closed_at=now,
                reason=reason,
                forced=bool(blockers),
                blockers=blockers,
                carried=[adjustment_json(row) for row in report.adjustments],
            )
    except IntegrityError:
        # Only without the lock (not PostgreSQL): the constraint decided instead.
        _refuse_if_closed(month)
        raise
    SnapshotFile.objects.bulk_create(
        SnapshotFile(
            close=close,
            format=fmt,
            content=content,
            sha256=hashlib.sha256(content).hexdigest(),
        )
        for fmt, content in files.items()
    )
    audit.record(
        kind=audit.Kind.MONTH,
        action="closed",
        target=close,
        actor=user,
        details={"month": f"{month:%Y-%m}", "reason": reason, "forced": close.forced},
    )
    return close


@transaction.atomic
def month_reopen(*, month: date, user: User, reason: str) -> MonthClose:
    """Reopen a closed month: its report is live again. The close stays as history,
    with its files. Refused without a reason, and while a later month is closed."""
    require_month_closer(user)
    month = month_start(month)
    reason = reason.strip()
    if not reason:
        raise MonthCloseRefused(f"Say why {month:%B %Y} is reopened.")
    _lock(month)
    close = month_close_in_force(month=month)
    if close is None:
        raise MonthCloseRefused(f"{month:%B %Y} is not closed.")
    later = MonthClose.objects.filter(month__gt=month, reopened_at__isnull=True)
    if latest := later.order_by("-month").first():
        raise MonthCloseRefused(
            f"{latest.month:%B %Y} is closed after {month:%B %Y}: "
            "reopen the later months first."
        )
    close.reopened_by, close.reopened_at = user, timezone.now()
    close.reopen_reason = reason
    close.save(update_fields=["reopened_by", "reopened_at", "reopen_reason"])
    audit.record(
        kind=audit.Kind.MONTH,
        action="reopened",
        target=close,
        actor=user,
        details={"month": f"{month:%Y-%m}", "reason": reason},
    )
    return close


def _lock(month: date) -> None:
    """Hold the month until this transaction ends, so that two finance users closing
    at once make one close, and the second hears that the first did. PostgreSQL only;
    elsewhere the one-close-in-force constraint still refuses a second close."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            key = month.year * 100 + month.month
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_LOCK_SPACE, key])


def _refuse_if_closed(month: date) -> None:
    close = month_close_in_force(month=month)
    if close is not None:
        raise MonthAlreadyClosed(
            f"{month:%B %Y} is already closed, by {close.closed_by} "
            f"on {close.closed_at:%-d %B %Y at %H:%M} UTC."
        )


def month_close_events(*, month: date) -> list[CloseEvent]:
    """Every close, forced close and reopen of the month, oldest first."""
    events = []
    closes = MonthClose.objects.filter(month=month_start(month)).select_related(
        "closed_by", "reopened_by"
    )
    for close in closes:
        kind = "forced_close" if close.forced else "close"
        events.append(CloseEvent(kind, close.closed_by, close.closed_at, close.reason))
        if close.reopened_by and close.reopened_at:
            events.append(
                CloseEvent(
                    "reopen", close.reopened_by, close.reopened_at, close.reopen_reason
                )
            )
    return sorted(events, key=lambda event: event.at)


def snapshot_file(*, close: MonthClose, fmt: str) -> SnapshotFile | None:
    return SnapshotFile.objects.filter(close=close, format=fmt).first()


def snapshot_data(*, close: MonthClose) -> dict[str, Any]:
    """The closed report's figures: its stored JSON."""
    stored = SnapshotFile.objects.get(close=close, format="json")
    return json.loads(bytes(stored.content))


def snapshot_seen_by(
    *, close: MonthClose, teams: QuerySet[Team], whole_organisation: bool
) -> dict[str, Any]:
    data = snapshot_data(close=close)
    return data if whole_organisation else snapshot_for_teams(data, teams)


def closed_totals(
    *, months: Iterable[date], teams: QuerySet[Team], whole_organisation: bool
) -> dict[date, dict[str, Any]]:
    """The closed months among `months`: each one's close and closed totals (plan,
    actual in effective cost, provisional when known), as the reader sees them."""
    closes = MonthClose.objects.filter(
        month__in=list(months), reopened_at__isnull=True
    ).select_related("closed_by")
    stored = SnapshotFile.objects.filter(close__in=closes, format="json")
    data = {file.close_id: json.loads(bytes(file.content)) for file in stored}
    totals = {}
    for close in closes:
        seen = data[close.pk]
        if not whole_organisation:
            seen = snapshot_for_teams(seen, teams)
        provisional = seen["totals"].get("provisional")
        totals[close.month] = {
            "close": close,
            "plan": Decimal(seen["totals"]["plan"]),
            "actual": Decimal(seen["totals"]["effective"]),
            "provisional": None if provisional is None else Decimal(provisional),
        }
    return totals


def snapshot_for_teams(data: dict[str, Any], teams: QuerySet[Team]) -> dict[str, Any]:
    """The closed report as a team user sees it: their teams' rows, totals added up
    from those, and none of the organisation-wide sections (unallocated spend,
    breakdowns, trend, reconciliation, accruals)."""
    slugs = _team_keys(teams)
    own = [team for team in data["teams"] if team["slug"] in slugs]
    projects = [project for team in own for project in team["projects"]]
    return {
        "month": data["month"],
        "currency": data["currency"],
        "status": data["status"],
        "complete": data["complete"],
        "teams": own,
        "totals": {
            "plan": str(_total(team["plan"] for team in own)),
            "variance": str(_total(team["variance"] for team in own)),
            "billed": str(_total(project["billed"] for project in projects)),
            "effective": str(_total(project["effective"] for project in projects)),
            "by_measure": _by_measure(
                row for team in own for row in team["by_measure"]
            ),
        },
        "adjustments_to_closed_months": [
            row
            for row in data.get("adjustments_to_closed_months", [])
            if row["team"] in slugs
        ],
    }


def _total(amounts: Iterable[str]) -> Decimal:
    return sum((Decimal(amount) for amount in amounts), ZERO)


def _by_measure(rows: Iterable[dict[str, str]]) -> list[dict[str, str]]:
    sums: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for row in rows:
        for figure in ("plan", "actual", "variance"):
            sums[row["measure"]][figure] += Decimal(row[figure])
    return [
        {"measure": measure, **{k: str(v) for k, v in figures.items()}}
        for measure, figures in sorted(sums.items())
    ]


def _team_keys(teams: QuerySet[Team]) -> set[str]:
    """Team slugs as the report's JSON writes them (core.exports)."""
    return {spreadsheet_safe(slug) for slug in teams.values_list("slug", flat=True)}


# Adjustments


def open_report(
    *,
    month: date,
    teams: QuerySet[Team],
    whole_organisation: bool,
    stored_check: bool = False,
) -> MonthlyReport:
    """The live report of an open month, with the adjustments to closed months that
    it carries as their own line (`stored_check`: see `monthly_report`)."""
    report = monthly_report(
        month=month,
        teams=teams,
        whole_organisation=whole_organisation,
        stored_check=stored_check,
    )
    adjustments = adjustments_carried_into(month=report.month)
    report.adjustments = _visible(adjustments, teams, whole_organisation)
    return report


def post_close_adjustments(
    *, close: MonthClose, teams: QuerySet[Team], whole_organisation: bool
) -> list[Adjustment]:
    """The live figures of a closed month less its snapshot's, per project (and the
    unallocated), where they differ."""
    live = _live_amounts([close.month])[close.month]
    since = _since_close(snapshot_data(close=close), close.month, live)
    return _visible(list(since.values()), teams, whole_organisation)


def adjustments_carried_into(*, month: date) -> list[Adjustment]:
    """What changed in the closed months whose first open month after them is
    `month`, less what later closed reports have already carried, oldest first."""
    month = month_start(month)
    closes = {
        close.month: close
        for close in MonthClose.objects.filter(
            month__lt=month, reopened_at__isnull=True
        )
    }
    run = []  # the closed months just before `month`, newest first
    earlier = month_start(month - timedelta(days=1))
    while earlier in closes:
        run.append(closes[earlier])
        earlier = month_start(earlier - timedelta(days=1))
    if not run:
        return []
    live = _live_amounts([close.month for close in run])
    snapshots = {
        stored.close_id: json.loads(bytes(stored.content))
        for stored in SnapshotFile.objects.filter(close__in=run, format="json")
    }
    carried = []
    for close in reversed(run):
        since = _since_close(snapshots[close.pk], close.month, live[close.month])
        booked = _booked(run, close.month)
        for key in sorted({*since, *booked}, key=_key_order):
            row = since.get(key) or booked[key]
            billed = _amount(since, key, "billed") - _amount(booked, key, "billed")
            effective = _amount(since, key, "effective") - _amount(
                booked, key, "effective"
            )
            if billed or effective:
                carried.append(
                    Adjustment(close.month, key, row.name, row.team, billed, effective)
                )
    return carried


def _amount(rows: dict[str, Adjustment], key: str, figure: str) -> Decimal:
    row = rows.get(key)
    return getattr(row, figure) if row else ZERO


def _booked(run: list[MonthClose], month: date) -> dict[str, Adjustment]:
    """What the closed months after `month` in `run` carried for it, added up."""
    booked: dict[str, Adjustment] = {}
    for close in run:
        if close.month <= month:
            continue
        for row in map(adjustment_from_json, close.carried):
            if row.month != month:
                continue
            before = booked.get(row.key)
            if before:
                row = Adjustment(
                    month,
                    row.key,
                    row.name,
                    row.team,
                    before.billed + row.billed,
                    before.effective + row.effective,
                )
            booked[row.key] = row
    return booked


def _since_close(
    data: dict[str, Any], month: date, live: dict[str | None, tuple[Decimal, Decimal]]
) -> dict[str, Adjustment]:
    """Live less closed, per key of the snapshot, where either measure differs."""
    closed = _snapshot_amounts(data)
    listed = {key for key in closed if key not in KEY_NAMES}
    now: dict[str, tuple[Decimal, Decimal]] = {
        key: live.get(key, (ZERO, ZERO)) for key in listed
    }
    now[UNALLOCATED] = live.get(None, (ZERO, ZERO))
    rest = [amounts for key, amounts in live.items() if key not in listed and key]
    now[UNLISTED] = (
        sum((billed for billed, _ in rest), ZERO),
        sum((effective for _, effective in rest), ZERO),
    )
    since = {}
    for key, (name, team, billed, effective) in closed.items():
        live_billed, live_effective = now[key]
        if live_billed != billed or live_effective != effective:
            since[key] = Adjustment(
                month, key, name, team, live_billed - billed, live_effective - effective
            )
    return since


def _snapshot_amounts(
    data: dict[str, Any],
) -> dict[str, tuple[str, str, Decimal, Decimal]]:
    """Key → (name, team, billed, effective) as the month closed: each project row,
    the unallocated, and the rest of the total (projects the report did not list)."""
    amounts = {
        project["slug"]: (
            project["name"],
            team["slug"],
            Decimal(project["billed"]),
            Decimal(project["effective"]),
        )
        for team in data["teams"]
        for project in team["projects"]
    }
    unallocated = data["unallocated"]
    billed, effective = (
        Decimal(unallocated["billed"]),
        Decimal(unallocated["effective"]),
    )
    rest_billed = Decimal(data["totals"]["billed"]) - billed
    rest_effective = Decimal(data["totals"]["effective"]) - effective
    rest_billed -= sum((row[2] for row in amounts.values()), ZERO)
    rest_effective -= sum((row[3] for row in amounts.values()), ZERO)
    amounts[UNALLOCATED] = (KEY_NAMES[UNALLOCATED], "", billed, effective)
    amounts[UNLISTED] = (KEY_NAMES[UNLISTED], "", rest_billed, rest_effective)
    return amounts


def _live_amounts(
    months: list[date],
) -> dict[date, dict[str | None, tuple[Decimal, Decimal]]]:
    """Each month's converted spend per project slug (as the report's JSON writes
    it; None for the unallocated) in billed and effective cost: one query."""
    live: dict[date, dict[str | None, tuple[Decimal, Decimal]]] = {
        month: {} for month in months
    }
    rows = (
        DailyCost.objects.filter(
            fx_rate__isnull=False,
            date__gte=min(months),
            date__lt=next_month(max(months)),
        )
        .annotate(month=TruncMonth("date"))
        .values("month", "project__slug")
        .annotate(billed=Sum("billed_cost"), effective=Sum("effective_cost"))
        .order_by()
    )
    for row in rows:
        month = row["month"]
        if isinstance(month, datetime):
            month = month.date()
        if month in live:
            slug = row["project__slug"]
            key = None if slug is None else spreadsheet_safe(slug)
            live[month][key] = (row["billed"] or ZERO, row["effective"] or ZERO)
    return live


def _visible(
    rows: list[Adjustment], teams: QuerySet[Team], whole_organisation: bool
) -> list[Adjustment]:
    """Finance sees every row; a team user the rows of their teams' projects."""
    if whole_organisation:
        return rows
    slugs = _team_keys(teams)
    return [row for row in rows if row.team in slugs]


def _key_order(key: str) -> tuple[bool, str]:
    return (key in KEY_NAMES, key)


def adjustment_json(row: Adjustment) -> dict[str, str]:
    """An adjustment as the report's JSON writes it, and as a close records it."""
    return {
        "month": f"{row.month:%Y-%m}",
        "slug": row.key,
        "name": row.name,
        "team": row.team,
        "billed": str(row.billed),
        "effective": str(row.effective),
    }


def adjustment_from_json(row: dict[str, str]) -> Adjustment:
    return Adjustment(
        month=date.fromisoformat(f"{row['month']}-01"),
        key=row["slug"],
        name=row["name"],
        team=row["team"],
        billed=Decimal(row["billed"]),
        effective=Decimal(row["effective"]),
    )


def report_json(
    *, month: date, teams: QuerySet[Team], whole_organisation: bool
) -> dict:
    """The month's report as the portal's JSON has it, for the teams given: a closed
    month's snapshot with its post-close adjustments, else the open report; and the
    history of its closes."""
    close = month_close_in_force(month=month)
    if close is not None:
        data = snapshot_seen_by(
            close=close, teams=teams, whole_organisation=whole_organisation
        )
        adjustments = post_close_adjustments(
            close=close, teams=teams, whole_organisation=whole_organisation
        )
        data |= {
            "closed": _close_json(close),
            "post_close_adjustments": [adjustment_json(row) for row in adjustments],
        }
    else:
        report = open_report(
            month=month,
            stored_check=True,
            teams=teams,
            whole_organisation=whole_organisation,
        )
        data = report.as_json()
    events = month_close_events(month=month)
    return data | {"close_history": [_event_json(e) for e in events]}


def _close_json(close: MonthClose) -> dict:
    return {
        "closed_by": str(close.closed_by),
        "closed_at": close.closed_at.isoformat(),
        "forced": close.forced,
        "reason": close.reason,
        "blockers": close.blockers,
        "sha256": dict(close.files.values_list("format", "sha256")),
    }


def _event_json(event: CloseEvent) -> dict:
    return {
        "kind": event.kind,
        "by": str(event.user),
        "at": event.at.isoformat(),
        "reason": event.reason,
    }
