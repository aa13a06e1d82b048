from datetime import date, timedelta
from decimal import Decimal

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from accounts.permissions import (
    require_journal_reader,
    require_month_closer,
    require_organisation_view,
    user_can_close_months,
)
from billing.accruals import AccrualRefused, accruals_book
from billing.explorer import first_spend_by_team
from billing.models import BillingSource
from budgets import selectors
from core.currencies import ZERO
from core.dates import month_start, next_month
from reports import charts, close_requests, closing, exports, files
from reports.forms import MonthCloseForm, MonthReopenForm
from reports.models import MonthClose, QueuedWork, ReportFile
from reports.selectors import report_month_or_404, report_scope, team_totals
from reports.services import month_accruals, percent, report_months


@login_required
def organisation_overview(request: HttpRequest) -> HttpResponse:
    require_organisation_view(request.user)
    now = timezone.now().date()
    # ?month=YYYY-MM shows that month as it ended (or to date, for this month).
    this_month = _picked_month(request.GET.get("month", ""), now)
    today = min(next_month(this_month) - timedelta(days=1), now)
    tomorrow = today + timedelta(days=1)
    teams = team_totals(as_of=today)
    first_spend = first_spend_by_team()
    context = {
        "teams": teams,
        # Each team with the first day of its spend, where its "to date" link starts.
        "team_rows": [
            (row, min(first_spend.get(row.team.pk, today), today)) for row in teams
        ],
        "month_total": selectors.actual_between(start=this_month, end=tomorrow),
        "month_provisional": selectors.provisional_between(
            measure="effective_cost", start=this_month, end=tomorrow
        ),
        "month_unallocated": selectors.actual_between(
            start=this_month, end=tomorrow, project__isnull=True
        ),
        "unallocated_by_service": selectors.spend_breakdown(
            measure="effective_cost",
            group_by="service_name",
            project__isnull=True,
            date__gte=this_month,
            date__lt=tomorrow,
        ),
        "by_provider": selectors.spend_breakdown(
            measure="effective_cost",
            group_by="provider_name",
            date__gte=this_month,
            date__lt=tomorrow,
        ),
        "unconverted": selectors.unconverted_totals(),
        "sources": BillingSource.objects.all(),
        "this_month": this_month,
        "today": today,
        "is_current": this_month == month_start(now),
        "previous_month": month_start(this_month - timedelta(days=1)),
        "next_month": next_month(this_month) if this_month < month_start(now) else None,
    }
    return render(request, "reports/overview.html", context)


def _picked_month(value: str, today: date) -> date:
    """The month asked for (YYYY-MM), this month when none is or it is unreadable;
    never a month still to come."""
    try:
        picked = date.fromisoformat(f"{value}-01")
    except ValueError:
        return month_start(today)
    return min(picked, month_start(today))


@login_required
def report_list(request: HttpRequest) -> HttpResponse:
    scope = report_scope(request.user)
    months = report_months(**scope)
    # A closed month shows its snapshot's totals, not today's.
    closed = closing.closed_totals(months=[row["month"] for row in months], **scope)
    for row in months:
        row.update(closed.get(row["month"], {}))
        row["variance"] = row["actual"] - row["plan"]
        row["provisional_percent"] = (
            None
            if row["provisional"] is None
            else percent(row["provisional"], row["actual"])
        )
    return render(request, "reports/report_list.html", {"months": months})


@login_required
def report_detail(request: HttpRequest, month: date) -> HttpResponse:
    close = closing.month_close_in_force(month=report_month_or_404(month))
    if close is not None:
        return _closed_report_detail(request, close)
    report = closing.open_report(
        month=month, stored_check=True, **report_scope(request.user)
    )
    context = {
        "report": report,
        **charts.report_charts(report),
        "next_month": next_month(report.month)
        if next_month(report.month) <= timezone.now().date()
        else None,
        "can_book_accruals": request.user.sees_everything,
        "month_close": _close_panel(request.user, report.month),
    }
    response = render(request, "reports/report_detail.html", context)
    return _reloading(response, context["month_close"]["request"], seconds=5)


@login_required
@require_POST
def report_accruals_book(request: HttpRequest, month: date) -> HttpResponse:
    """Finance books the month's accruals: its provisional spend, as of now."""
    if not request.user.sees_everything:
        raise PermissionDenied("Finance books accruals.")
    try:
        booked = accruals_book(month=report_month_or_404(month), user=request.user)
    except AccrualRefused as refused:
        messages.error(request, str(refused))
    else:
        messages.success(request, f"{len(booked)} accrual(s) booked for {month:%B %Y}.")
    return redirect(f"{reverse('report_detail', args=[month])}#accruals")


@login_required
def report_json(request: HttpRequest, month: date) -> JsonResponse:
    month = report_month_or_404(month)
    return JsonResponse(closing.report_json(month=month, **report_scope(request.user)))


# format -> (renderer, content type, file name suffix)
EXPORTS = {
    "csv": (exports.render_csv, "text/csv; charset=utf-8", "report.csv"),
    "xlsx": (
        exports.render_xlsx,
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "report.xlsx",
    ),
    "pdf": (exports.render_pdf, "application/pdf", "report.pdf"),
    "json": (exports.render_json, "application/json", "report.json"),
    "journal": (exports.render_journal, "text/csv; charset=utf-8", "journal.csv"),
}


@login_required
def report_export(request: HttpRequest, month: date, fmt: str) -> HttpResponse:
    """The report as a file, with what the user may see of it, as on its page."""
    if fmt == "journal":
        require_journal_reader(request.user)
    render, content_type, suffix = EXPORTS[fmt]
    close = closing.month_close_in_force(month=report_month_or_404(month))
    if close is not None:
        response = _closed_file(request, close, fmt, content_type)
    elif fmt in files.RENDERERS:  # too heavy for the request: a worker draws it
        file = files.report_file_request(user=request.user, month=month, fmt=fmt)
        return redirect("report_file", month, file.pk)
    else:
        report = closing.open_report(
            month=month, stored_check=True, **report_scope(request.user)
        )
        response = HttpResponse(render(report), content_type=content_type)
    filename = f"spendtracker-{month:%Y-%m}-{suffix}"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@login_required
def report_file(request: HttpRequest, month: date, pk: int) -> HttpResponse:
    """A report file a worker draws for this user: a page that waits for it (it
    reloads itself), then the file."""
    file = get_object_or_404(ReportFile, pk=pk, month=month, user=request.user)
    _, content_type, suffix = EXPORTS[file.format]
    if file.status == ReportFile.Status.READY and "download" in request.GET:
        response = HttpResponse(bytes(file.content or b""), content_type=content_type)
        filename = f"spendtracker-{month:%Y-%m}-{suffix}"
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response
    response = render(
        request, "reports/report_file.html", {"file": file, "month": month}
    )
    return _reloading(response, file, seconds=2)


def _reloading(
    response: HttpResponse, work: QueuedWork | None, *, seconds: int
) -> HttpResponse:
    """A page waiting for a worker reloads itself until the work is done, failed
    or given up."""
    if work is not None and work.waiting:
        response["Refresh"] = str(seconds)
    return response


def _closed_file(
    request: HttpRequest, close: MonthClose, fmt: str, content_type: str
) -> HttpResponse:
    """A closed month's file as it was stored when the month closed."""
    if not request.user.sees_everything:
        # The stored files hold every team; team users read their part on the page.
        raise PermissionDenied(
            "A closed month's files cover every team: finance and admins download them."
        )
    stored = closing.snapshot_file(close=close, fmt=fmt)
    if stored is None:
        raise Http404(f"No {fmt} file was kept when {close.month:%B %Y} closed.")
    response = HttpResponse(bytes(stored.content), content_type=content_type)
    response["X-Snapshot-SHA256"] = stored.sha256
    return response


def _closed_report_detail(request: HttpRequest, close: MonthClose) -> HttpResponse:
    """A closed month: its snapshot's figures, and what restatements changed since."""
    scope = report_scope(request.user)
    data = closing.snapshot_seen_by(close=close, **scope)
    for team in data["teams"]:
        team["actual"] = str(Decimal(team["plan"]) + Decimal(team["variance"]))
    adjustments = closing.post_close_adjustments(close=close, **scope)
    month = close.month
    following = next_month(month)
    context = {
        "close": close,
        "data": data,
        "month": month,
        "previous_month": month_start(month - timedelta(days=1)),
        "next_month": following if following <= timezone.now().date() else None,
        "whole_organisation": scope["whole_organisation"],
        "adjustments": adjustments,
        "adjustments_total": sum((row.effective for row in adjustments), ZERO),
        # Live: the true-up of the month's accruals comes with invoices after it closed.
        "accruals": month_accruals(month=month, **scope),
        "today": timezone.now().date(),
        "month_close": _close_panel(request.user, month, close=close),
        "breakdowns": [
            ("By provider", data.get("by_provider", [])),
            ("By service category", data.get("by_service_category", [])),
            ("By charge category", data.get("by_charge_category", [])),
        ],
        **_snapshot_charts(data),
    }
    response = render(request, "reports/report_closed.html", context)
    return _reloading(response, context["month_close"]["request"], seconds=5)


def _snapshot_charts(data: dict) -> dict:
    teams = [
        charts.Pair(
            team["name"],
            Decimal(team["plan"]),
            Decimal(team["plan"]) + Decimal(team["variance"]),
        )
        for team in data["teams"]
    ]
    trend = [
        charts.Pair(
            f"{date.fromisoformat(row['month'] + '-01'):%b %y}",
            Decimal(row["plan"]),
            Decimal(row["actual"]),
        )
        for row in data.get("trend", [])
    ]
    currency = data["currency"]
    return {
        "team_chart": charts.plan_actual_bars(
            "Plan vs actual by team", teams, currency
        ),
        "trend_chart": charts.trend_lines(
            "Plan vs actual, last 12 months", trend, currency
        )
        if trend
        else None,
    }


def _close_panel(user, month: date, close: MonthClose | None = None) -> dict:
    """The month-close section of the report: its history, and for finance the
    forms (with what stands in the way of a close, in words) and the close a worker
    is doing, or why the last one failed."""
    can_close = user_can_close_months(user)
    ended = next_month(month) <= timezone.now().date()
    events = closing.month_close_events(month=month)
    asked = (
        close_requests.month_close_request_shown(month=month, events=events)
        if can_close
        else None
    )
    may_close = can_close and ended and close is None and not (asked and asked.waiting)
    return {
        "month": month,
        "close": close,
        "files": list(close.files.values_list("format", "sha256"))
        if close and can_close
        else [],
        "events": events,
        "request": asked,
        "can_close": may_close,
        "can_reopen": can_close and close is not None,
        "blockers": closing.month_close_blockers(month=month) if may_close else [],
        "close_form": MonthCloseForm(),
        "reopen_form": MonthReopenForm(),
    }


@login_required
@require_POST
def month_close_view(request: HttpRequest, month: date) -> HttpResponse:
    require_month_closer(request.user)
    form = MonthCloseForm(request.POST)
    if not form.is_valid():
        messages.error(request, _form_errors(form))
        return redirect("report_detail", month)
    try:
        close_requests.month_close_request(
            month=report_month_or_404(month),
            user=request.user,
            reason=form.cleaned_data["reason"],
        )
    except closing.MonthCloseRefused as refused:
        messages.error(request, str(refused))
    else:
        messages.success(
            request,
            f"{month:%B %Y} is being closed: a worker stores its report's files. "
            "This page shows the closed report when it is done.",
        )
    return redirect("report_detail", month)


@login_required
@require_POST
def month_reopen_view(request: HttpRequest, month: date) -> HttpResponse:
    require_month_closer(request.user)
    form = MonthReopenForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"Say why {month:%B %Y} is reopened.")
        return redirect("report_detail", month)
    try:
        closing.month_reopen(
            month=report_month_or_404(month),
            user=request.user,
            reason=form.cleaned_data["reason"],
        )
    except closing.MonthCloseRefused as refused:
        messages.error(request, str(refused))
    else:
        messages.success(request, f"{month:%B %Y} is open again: its figures are live.")
    return redirect("report_detail", month)


def _form_errors(form) -> str:
    return " ".join(str(error) for errors in form.errors.values() for error in errors)
