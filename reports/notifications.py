"""The monthly report by email: each finance user receives the previous month's
report once, with an HTML summary, its PDF attached and a link to its page.

On schedule, one `ReportEmail` row is recorded per finance user and month (a database
constraint refuses a second), then each row is claimed by a conditional UPDATE with a
lease before it is sent (core.delivery, as alert emails are), so two workers, or the
schedule running twice, never send it twice. A closed month is emailed as it closed:
its stored figures and PDF. A person who opts out on their email settings is not
sent what is still owed to them.
"""

import json
import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db.models import QuerySet
from django.template.loader import render_to_string
from django.urls import reverse

from accounts.models import Team, User
from core import delivery
from core.currencies import ZERO, money
from core.dates import month_start
from reports import closing
from reports.exports import render_json, render_pdf
from reports.models import MonthClose, ReportEmail

TOTALS = ("plan", "effective", "billed", "variance", "unallocated", "provisional")


@dataclass(frozen=True)
class ReportEmailContent:
    """What every finance user is sent about one month: rendered once per sweep."""

    month: date
    data: dict[str, Any]  # the report's JSON; the stored one when closed
    pdf: bytes
    close: MonthClose | None
    restated: Decimal  # effective cost restated since the close
    blockers: list[str]  # why an open month is not final yet

    @property
    def teams(self) -> list[dict[str, Any]]:
        return [
            {
                "name": team["name"],
                "plan": Decimal(team["plan"]),
                "actual": Decimal(team["plan"]) + Decimal(team["variance"]),
                "variance": Decimal(team["variance"]),
            }
            for team in self.data["teams"]
        ]


def report_email_recipients() -> QuerySet[User]:
    """Finance users who want the monthly report."""
    return User.objects.filter(
        role=User.Role.FINANCE, is_active=True, monthly_report_email=True
    ).exclude(email="")


def monthly_report_email_run(*, today: date) -> int:
    """Owe the previous month's report to each finance user, then send what is owed;
    the number sent by this call."""
    report_emails_record(month=month_start(month_start(today) - timedelta(days=1)))
    return report_emails_send()


def report_emails_record(*, month: date) -> None:
    """One email row per recipient and month; a second call adds nothing."""
    ReportEmail.objects.bulk_create(
        [ReportEmail(month=month, user=user) for user in report_email_recipients()],
        ignore_conflicts=True,
    )


def report_emails_send() -> int:
    """Send every monthly report email still owed; the number sent by this call."""
    sweep = delivery.Sweep(ReportEmail.objects.all())
    owed = delivery.owed(ReportEmail.objects.all())
    wanted = set(report_email_recipients().values_list("pk", flat=True))
    for month in sorted(set(owed.values_list("month", flat=True))):
        content = None
        rows = owed.filter(month=month).select_related("user").order_by("pk")
        for row in rows:
            if row.user_id not in wanted:
                continue  # opted out since it was recorded: stays unsent
            if sweep.stopped:
                return sweep.sent  # the rest wait, untouched, for the next sweep
            # Rendered before the first claim, so the claim's lease is the send's.
            content = content or report_email_content(month=month)
            sweep.deliver(
                delivery.owed(ReportEmail.objects.filter(pk=row.pk)),
                partial(_report_email_send, content=content, user=row.user),
                f"Report email {row.pk}",
            )
    return sweep.sent


def _report_email_send(
    _claim: uuid.UUID, *, content: ReportEmailContent, user: User
) -> None:
    monthly_report_email_send(content=content, user=user)


def report_email_content(*, month: date) -> ReportEmailContent:
    everyone = Team.objects.all()
    close = closing.month_close_in_force(month=month)
    if close is not None:
        stored = closing.snapshot_file(close=close, fmt="pdf")
        assert stored is not None, "every close stores its PDF"
        restated = closing.post_close_adjustments(
            close=close, teams=everyone, whole_organisation=True
        )
        return ReportEmailContent(
            month=month,
            data=closing.snapshot_data(close=close),
            pdf=bytes(stored.content),
            close=close,
            restated=sum((row.effective for row in restated), ZERO),
            blockers=[],
        )
    report = closing.open_report(month=month, teams=everyone, whole_organisation=True)
    return ReportEmailContent(
        month=month,
        data=json.loads(render_json(report)),
        pdf=render_pdf(report),
        close=None,
        restated=ZERO,
        blockers=closing.month_close_blockers(month=month),
    )


def monthly_report_email_send(*, content: ReportEmailContent, user: User) -> None:
    month, totals = content.month, content.data["totals"]
    currency = content.data["currency"]
    context = {
        "content": content,
        "user": user,
        "totals": {key: Decimal(totals[key]) for key in TOTALS},
        "adjustments": content.data.get("adjustments_to_closed_months", []),
        "currency": currency,
        "report_url": _link(reverse("report_detail", args=[month])),
        "settings_url": _link(reverse("notification_settings")),
    }
    spent = money(Decimal(totals["effective"]), currency)
    planned = money(Decimal(totals["plan"]), currency)
    state = "closed" if content.close else "not closed yet"
    message = EmailMultiAlternatives(
        subject=f"[Spendtracker] {month:%B %Y} report: {spent} spent against "
        f"{planned} planned ({state})",
        body=render_to_string("emails/monthly_report.txt", context),
        to=[user.email],
    )
    message.attach_alternative(
        render_to_string("emails/monthly_report.html", context), "text/html"
    )
    message.attach(
        f"spendtracker-{month:%Y-%m}-report.pdf", content.pdf, "application/pdf"
    )
    message.send()


def _link(path: str) -> str:
    return settings.SITE_URL.rstrip("/") + path
