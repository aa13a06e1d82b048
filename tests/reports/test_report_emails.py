"""The monthly report by email: each finance user receives the previous month's
report once (HTML summary, text, the PDF attached, a link), and can opt out.

Time is frozen on the 3rd of March 2026 at 08:00 UTC, when the schedule runs by
default; the report emailed is February's."""

from datetime import UTC, date, datetime

import pytest
from django.core import mail
from django.urls import reverse

from accounts.models import User
from billing.models import BillingSource
from reports.closing import month_close
from reports.models import ReportEmail
from reports.notifications import monthly_report_email_run, report_emails_send
from tests.conftest import make_spend, make_user

FEBRUARY = date(2026, 2, 1)
TODAY = date(2026, 3, 3)


@pytest.fixture(autouse=True)
def on_the_third(time_machine):
    time_machine.move_to(datetime(2026, 3, 3, 8, tzinfo=UTC), tick=False)


@pytest.fixture
def february(world):
    make_spend(world.project, date(2026, 2, 3), "1500")
    make_spend(world.other_project, date(2026, 2, 11), "90")
    return world


def test_each_finance_user_is_sent_the_previous_months_report_once(february):
    second = make_user("cfo@test.example", role=User.Role.FINANCE, full_name="Cora")
    assert monthly_report_email_run(today=TODAY) == 2
    assert monthly_report_email_run(today=TODAY) == 0  # the schedule running again
    assert sorted(m.to[0] for m in mail.outbox) == [
        second.email,
        "finance@test.example",
    ]
    assert ReportEmail.objects.filter(month=FEBRUARY, status="sent").count() == 2

    message = next(m for m in mail.outbox if m.to == [second.email])
    assert message.subject == (
        "[Spendtracker] February 2026 report: $1,590 spent against $2,000 planned "
        "(not closed yet)"
    )
    assert "Hello Cora," in message.body
    assert "http://127.0.0.1:8000/reports/2026-02/" in message.body
    assert "Foundation" in message.body and "$1,500" in message.body
    [(html, mimetype)] = message.alternatives
    assert mimetype == "text/html"
    assert "Open the February report" in html
    assert 'href="http://127.0.0.1:8000/reports/2026-02/"' in html
    [(name, pdf, kind)] = message.attachments
    assert (name, kind) == ("spendtracker-2026-02-report.pdf", "application/pdf")
    assert pdf.startswith(b"%PDF-")


def test_a_closed_month_is_emailed_as_it_was_closed_with_its_stored_pdf(february):
    BillingSource.objects.update(data_complete_through=datetime(2026, 3, 1, tzinfo=UTC))
    close = month_close(month=FEBRUARY, user=february.admin)
    make_spend(february.project, date(2026, 2, 20), "10")  # restated after the close
    monthly_report_email_run(today=TODAY)
    [message] = mail.outbox
    assert message.subject.endswith("$1,590 spent against $2,000 planned (closed)")
    assert message.attachments[0][1] == bytes(close.files.get(format="pdf").content)
    assert f"as {february.admin} closed it on 3 March 2026" in message.body
    assert "restated February since it closed by $10.00" in message.body


def test_a_finance_user_who_opts_out_is_not_sent_it(client, february):
    client.force_login(february.finance)
    form = client.get(reverse("notification_settings")).content.decode()
    assert "Monthly report by email" in form
    client.post(
        reverse("notification_settings"), {"alert_delivery": "immediate"}
    )  # the box unticked
    february.finance.refresh_from_db()
    assert february.finance.monthly_report_email is False
    assert monthly_report_email_run(today=TODAY) == 0
    assert mail.outbox == []


def test_a_reader_who_opts_out_after_it_was_recorded_is_not_sent_it(february):
    ReportEmail.objects.create(month=FEBRUARY, user=february.finance)
    User.objects.filter(pk=february.finance.pk).update(monthly_report_email=False)
    assert report_emails_send() == 0
    assert ReportEmail.objects.get().status == "pending"


def test_team_users_and_admins_are_not_sent_it_nor_offered_it(client, february):
    monthly_report_email_run(today=TODAY)
    assert [m.to for m in mail.outbox] == [["finance@test.example"]]
    for persona in ("lead", "admin"):
        client.force_login(getattr(february, persona))
        form = client.get(reverse("notification_settings")).content.decode()
        assert "Monthly report by email" not in form


def test_an_email_the_mail_server_refuses_stays_owed_and_goes_later(february, settings):
    settings.EMAIL_BACKEND = "tests.email_backends.FailingBackend"
    assert monthly_report_email_run(today=TODAY) == 0
    owed = ReportEmail.objects.get()
    assert (owed.status, owed.attempts) == ("pending", 1)
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    assert report_emails_send() == 1
    assert len(mail.outbox) == 1


def test_report_emails_wait_out_a_long_mail_outage_and_go_once_after_it(
    february, mail_server, time_machine
):
    """Four finance users (more than the sweep's breaker lets it try while the mail
    server is down), a mail server refusing connections through fifteen hourly
    sweeps, then back: each is sent the report once."""
    for index in range(3):
        make_user(f"finance{index}@test.example", role=User.Role.FINANCE)
    assert monthly_report_email_run(today=TODAY) == 0
    for hour in range(1, 16):
        time_machine.move_to(datetime(2026, 3, 3, 8 + hour, tzinfo=UTC), tick=False)
        assert report_emails_send() == 0
    assert set(ReportEmail.objects.values_list("status", "refusals")) == {
        ("pending", 0)
    }
    mail_server.start()
    assert report_emails_send() == 4
    assert report_emails_send() == 0
    assert sorted(m["To"] for m in mail_server.received) == sorted(
        ReportEmail.objects.values_list("user__email", flat=True)
    )


def test_the_admin_retries_a_given_up_report_email(
    client, february, mail_server, time_machine, settings
):
    monthly_report_email_run(today=TODAY)
    time_machine.move_to(datetime(2026, 3, 4, 9, tzinfo=UTC), tick=False)
    assert report_emails_send() == 0
    owed = ReportEmail.objects.get()
    assert owed.status == "given_up"
    assert owed.given_up_reason.startswith("Not sent within 24 hours of being owed")
    client.force_login(february.admin)
    client.post(
        reverse("admin:reports_reportemail_changelist"),
        {"action": "retry_given_up", "_selected_action": [owed.pk]},
    )
    mail_server.start()
    assert report_emails_send() == 1
    assert report_emails_send() == 0
    assert [m["To"] for m in mail_server.received] == ["finance@test.example"]
