"""Month close: finance closes February from its report, a provider restates it,
the adjustment shows on February and carries into March, and February reopens.

Time is frozen in March 2026 (February has ended); each test states the spend it
makes. The world's two billing sources are final through February unless a test
says otherwise. The close form queues the close and a worker does it
(tests/reports/test_close_requests.py): here the worker's part runs in the test.
"""

import hashlib
import json
import threading
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.contrib.messages import get_messages
from django.core.management import call_command
from django.db import connection
from django.urls import reverse

from billing.models import BillingSource, CostRecord
from billing.services import daily_costs_rebuild
from reports.close_requests import month_close_run
from reports.closing import (
    MonthAlreadyClosed,
    MonthCloseRefused,
    adjustments_carried_into,
    month_close,
    month_reopen,
)
from reports.models import MonthClose, MonthCloseRequest
from tests.conftest import make_spend

FEBRUARY = date(2026, 2, 1)
MARCH = date(2026, 3, 1)
APRIL = date(2026, 4, 1)
END_OF_FEBRUARY = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def in_march(time_machine):
    time_machine.move_to(datetime(2026, 3, 10, 9, tzinfo=UTC), tick=False)


@pytest.fixture
def february(world):
    """Llama (Foundation) spent 1,500 in February, the other team 90, and 60 went to
    no project; every source is final through the end of February."""
    make_spend(world.project, date(2026, 2, 3), "1500")
    make_spend(world.other_project, date(2026, 2, 11), "90")
    make_spend(None, date(2026, 2, 12), "60")
    BillingSource.objects.update(data_complete_through=END_OF_FEBRUARY)
    return world


def restate(project, day: date, amount: str) -> None:
    """The provider sends the day's costs again, with another amount."""
    records = CostRecord.objects.filter(project=project, charge_period_start__date=day)
    records.update(
        billed_cost=Decimal(amount),
        effective_cost=Decimal(amount),
        list_cost=Decimal(amount),
        contracted_cost=Decimal(amount),
    )
    daily_costs_rebuild(start=day, end=date(day.year, day.month, day.day + 1))


def page(client, month: date) -> str:
    return client.get(reverse("report_detail", args=[month])).content.decode()


def report_json(client, month: date) -> dict:
    return client.get(reverse("report_json", args=[month])).json()


def messages_of(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def close_from_the_report(client, month: date, reason: str = ""):
    """Submit the close form, then do the worker's part: close what it queued."""
    response = client.post(reverse("month_close", args=[month]), {"reason": reason})
    for queued in MonthCloseRequest.objects.filter(status="queued"):
        month_close_run(queued.pk)
    return response


# Close, restate, see the adjustment, reopen


def test_closing_stores_the_reports_files_with_a_checksum_of_each(client, february):
    client.force_login(february.finance)
    response = close_from_the_report(client, FEBRUARY)
    assert response.status_code == 302
    close = MonthClose.objects.get(month=FEBRUARY)
    assert (close.closed_by, close.forced, close.reopened_at) == (
        february.finance,
        False,
        None,
    )
    assert close.closed_at == datetime(2026, 3, 10, 9, tzinfo=UTC)
    files = {file.format: file for file in close.files.all()}
    assert set(files) == {"json", "pdf", "csv", "xlsx", "journal"}
    for file in files.values():
        assert file.sha256 == hashlib.sha256(bytes(file.content)).hexdigest()
    assert bytes(files["pdf"].content).startswith(b"%PDF-")
    stored = json.loads(bytes(files["json"].content))
    assert stored["status"] == "closed"
    assert Decimal(stored["totals"]["effective"]) == Decimal("1650")

    pdf = client.get(reverse("report_export_pdf", args=[FEBRUARY]))
    assert pdf.content == bytes(files["pdf"].content)
    assert pdf["X-Snapshot-SHA256"] == files["pdf"].sha256
    download = client.get(reverse("report_export_json", args=[FEBRUARY]))
    assert download.content == bytes(files["json"].content)


def test_a_restatement_leaves_the_closed_month_as_it_was_and_shows_as_an_adjustment(
    client, february
):
    month_close(month=FEBRUARY, user=february.finance)
    restate(february.project, date(2026, 2, 3), "1620.5")
    restate(None, date(2026, 2, 12), "55")

    client.force_login(february.finance)
    data = report_json(client, FEBRUARY)
    assert data["status"] == "closed"
    assert Decimal(data["totals"]["effective"]) == 1650  # as closed, not 1,765.5
    llama = data["teams"][0]["projects"][0]
    assert (llama["slug"], Decimal(llama["actual"])) == ("llama-sft", 1500)
    adjustments = {row["slug"]: row for row in data["post_close_adjustments"]}
    assert set(adjustments) == {"llama-sft", "(unallocated)"}
    assert Decimal(adjustments["llama-sft"]["effective"]) == Decimal("120.5")
    assert Decimal(adjustments["(unallocated)"]["effective"]) == -5
    assert data["closed"]["closed_by"] == str(february.finance)

    html = page(client, FEBRUARY)
    assert "Post-close adjustments" in html
    assert "$120.50" in html and "−$5.00" in html
    assert "$1,650" in html  # the closed actual


def test_the_adjustment_carries_into_the_next_open_month_as_its_own_line_once(
    client, february, time_machine
):
    month_close(month=FEBRUARY, user=february.finance)
    restate(february.project, date(2026, 2, 3), "1620.5")
    make_spend(february.project, date(2026, 3, 2), "400")

    client.force_login(february.finance)
    march = report_json(client, MARCH)
    assert march["status"] == "open"
    assert Decimal(march["totals"]["effective"]) == 400  # March's own spend only
    [line] = march["adjustments_to_closed_months"]
    assert (line["month"], line["slug"], line["name"], line["team"]) == (
        "2026-02",
        "llama-sft",
        "Llama Sft",
        "foundation",
    )
    assert Decimal(line["billed"]) == Decimal(line["effective"]) == Decimal("120.5")
    assert "Adjustments to closed months" in page(client, MARCH)

    # March closes with the line in its snapshot; April carries only what is new.
    time_machine.move_to(datetime(2026, 4, 2, 9, tzinfo=UTC), tick=False)
    BillingSource.objects.update(data_complete_through=datetime(2026, 4, 1, tzinfo=UTC))
    march_close = month_close(month=MARCH, user=february.finance)
    assert [Decimal(row["effective"]) for row in march_close.carried] == [
        Decimal("120.5")
    ]
    assert adjustments_carried_into(month=APRIL) == []
    restate(february.project, date(2026, 2, 3), "1600.5")
    april = adjustments_carried_into(month=APRIL)
    assert [(row.month, row.key, row.effective) for row in april] == [
        (FEBRUARY, "llama-sft", Decimal("-20"))
    ]
    # February's own page still says what changed since it closed, in all.
    client.force_login(february.finance)  # the session of March has expired
    feb = report_json(client, FEBRUARY)
    assert [Decimal(row["effective"]) for row in feb["post_close_adjustments"]] == [
        Decimal("100.5")
    ]


def test_reopening_makes_the_figures_live_and_every_event_is_listed(client, february):
    client.force_login(february.finance)
    month_close(month=FEBRUARY, user=february.finance)
    restate(february.project, date(2026, 2, 3), "1620.5")
    refused = client.post(reverse("month_reopen", args=[FEBRUARY]), {"reason": " "})
    assert "Say why February 2026 is reopened." in messages_of(refused)
    assert MonthClose.objects.get().reopened_at is None

    client.force_login(february.admin)
    client.post(
        reverse("month_reopen", args=[FEBRUARY]),
        {"reason": "AWS credits for February arrived late"},
    )
    data = report_json(client, FEBRUARY)
    assert data["status"] == "open"
    assert Decimal(data["totals"]["effective"]) == Decimal("1770.5")
    assert [(e["kind"], e["by"], e["reason"]) for e in data["close_history"]] == [
        ("close", str(february.finance), ""),
        ("reopen", str(february.admin), "AWS credits for February arrived late"),
    ]
    html = page(client, FEBRUARY)
    assert "Reopened" in html and "AWS credits for February arrived late" in html
    assert adjustments_carried_into(month=MARCH) == []  # nothing is closed now

    # Closed again, the new snapshot has the restated figures.
    close = month_close(month=FEBRUARY, user=february.finance)
    stored = json.loads(bytes(close.files.get(format="json").content))
    assert Decimal(stored["totals"]["effective"]) == Decimal("1770.5")
    assert MonthClose.objects.filter(month=FEBRUARY).count() == 2


def test_a_month_does_not_reopen_while_a_later_month_is_closed(february, time_machine):
    time_machine.move_to(datetime(2026, 4, 2, 9, tzinfo=UTC), tick=False)
    BillingSource.objects.update(data_complete_through=datetime(2026, 4, 1, tzinfo=UTC))
    month_close(month=FEBRUARY, user=february.finance)
    month_close(month=MARCH, user=february.finance)
    with pytest.raises(MonthCloseRefused, match="reopen the later months first"):
        month_reopen(month=FEBRUARY, user=february.finance, reason="late invoice")
    month_reopen(month=MARCH, user=february.finance, reason="late invoice")
    month_reopen(month=FEBRUARY, user=february.finance, reason="late invoice")


# Refusals and forced close


def test_closing_is_refused_while_a_source_failed_or_is_not_final(client, february):
    BillingSource.objects.filter(name="AWS export").update(
        last_error="focus.csv, row 3, column BilledCost: 'abc' is not a number"
    )
    BillingSource.objects.filter(name="Test export").update(
        data_complete_through=datetime(2026, 2, 20, tzinfo=UTC)
    )
    client.force_login(february.finance)
    assert "Close February 2026 anyway" in page(client, FEBRUARY)

    response = client.post(reverse("month_close", args=[FEBRUARY]), {"reason": ""})
    assert messages_of(response) == [
        "February 2026 is not ready to close: AWS export failed: focus.csv, row 3, "
        "column BilledCost: 'abc' is not a number; Test export is final only through "
        "20 February 2026, not through the end of February. "
        "Give a reason to close it anyway."
    ]
    assert not MonthClose.objects.exists()


def test_finance_closes_anyway_with_a_reason_which_is_kept_and_listed(client, february):
    BillingSource.objects.filter(name="AWS export").update(data_complete_through=None)
    client.force_login(february.finance)
    reason = "AWS final data is late; the board meets tomorrow"
    close_from_the_report(client, FEBRUARY, reason)
    close = MonthClose.objects.get()
    assert (close.forced, close.reason) == (True, reason)
    assert close.blockers == ["AWS export has no final data yet"]
    data = report_json(client, FEBRUARY)
    assert data["closed"]["forced"] is True
    assert [(e["kind"], e["reason"]) for e in data["close_history"]] == [
        ("forced_close", reason)
    ]
    html = page(client, FEBRUARY)
    assert "Closed with sources not final" in html and reason in html


def test_a_month_is_closed_once_and_only_once_it_has_ended(february):
    with pytest.raises(MonthCloseRefused, match="March 2026 has not ended"):
        month_close(month=MARCH, user=february.finance, reason="early")
    month_close(month=FEBRUARY, user=february.finance)
    with pytest.raises(MonthAlreadyClosed, match="already closed, by"):
        month_close(month=FEBRUARY, user=february.admin)


def test_two_finance_users_closing_at_once_make_one_close(transactional_db, february):
    """Two threads with their own PostgreSQL sessions, held at the month's lock
    until both have reached it: one closes, the other hears it was closed."""
    assert connection.vendor == "postgresql"
    barrier = threading.Barrier(2)
    outcomes: list[str] = []
    errors: list[BaseException] = []

    def hold_at_the_lock(execute, sql, params, many, context):
        if "pg_advisory_xact_lock" in sql:
            barrier.wait(timeout=30)
        return execute(sql, params, many, context)

    def closer(user) -> None:
        try:
            with connection.execute_wrapper(hold_at_the_lock):
                month_close(month=FEBRUARY, user=user)
            outcomes.append("closed")
        except MonthAlreadyClosed:
            outcomes.append("already closed")
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [
        threading.Thread(target=closer, args=(user,))
        for user in (february.finance, february.admin)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert sorted(outcomes) == ["already closed", "closed"]
    assert MonthClose.objects.filter(month=FEBRUARY).count() == 1
    assert MonthClose.objects.get().files.count() == 5


# Who may do what


@pytest.mark.parametrize(
    ("persona", "expected"),
    [
        ("anonymous", 302),
        ("lead", 403),
        ("member", 403),
        ("outsider", 403),
        ("finance", 302),
        ("admin", 302),
    ],
)
def test_only_finance_and_admins_close_and_reopen_a_month(
    client, february, persona, expected
):
    if persona != "anonymous":
        client.force_login(getattr(february, persona))
    closing = close_from_the_report(client, FEBRUARY, "x")
    assert closing.status_code == expected
    closed = MonthClose.objects.filter(reopened_at__isnull=True).exists()
    assert closed == (persona in {"finance", "admin"})
    if not closed:
        month_close(month=FEBRUARY, user=february.finance)
    reopening = client.post(reverse("month_reopen", args=[FEBRUARY]), {"reason": "y"})
    assert reopening.status_code == expected
    reopened = MonthClose.objects.filter(reopened_at__isnull=False).exists()
    assert reopened == (persona in {"finance", "admin"})


@pytest.mark.parametrize("persona", ["lead", "member", "outsider", "finance", "admin"])
def test_each_persona_reads_the_closed_month_as_their_role_allows(
    client, february, persona
):
    month_close(month=FEBRUARY, user=february.finance)
    restate(february.project, date(2026, 2, 3), "1620.5")
    user = getattr(february, persona)
    client.force_login(user)
    sees_all = user.sees_everything
    assert client.get(reverse("report_detail", args=[FEBRUARY])).status_code == 200
    data = report_json(client, FEBRUARY)
    expected_teams = {
        "lead": ["foundation"],
        "member": ["foundation"],
        "outsider": ["other"],
    }.get(persona, ["foundation", "other"])
    assert [team["slug"] for team in data["teams"]] == expected_teams
    assert ("unallocated" in data) == sees_all
    assert bool(data["post_close_adjustments"]) == (persona != "outsider")
    for fmt in ("pdf", "json", "csv", "xlsx"):
        response = client.get(reverse(f"report_export_{fmt}", args=[FEBRUARY]))
        assert response.status_code == (200 if sees_all else 403)
    html = page(client, FEBRUARY)
    assert ("Reopen February 2026" in html) == sees_all
    assert "Secret Pretrain" not in html or persona in {"outsider", "finance", "admin"}


def test_a_lead_sees_the_closed_totals_of_their_teams_on_the_list_of_months(
    client, february
):
    month_close(month=FEBRUARY, user=february.finance)
    restate(february.project, date(2026, 2, 3), "2000")
    for user, actual in ((february.lead, "$1,500"), (february.finance, "$1,650")):
        client.force_login(user)
        html = client.get(reverse("report_list")).content.decode()
        row = html[html.index("February 2026") :].split("</tr>")[0]
        assert actual in row and "Closed" in row


def test_the_monthly_report_command_writes_the_stored_file_of_a_closed_month(
    february, tmp_path
):
    close = month_close(month=FEBRUARY, user=february.finance)
    restate(february.project, date(2026, 2, 3), "2000")
    output = tmp_path / "february.json"
    call_command(
        "monthly_report", "--month", "2026-02", "--format", "json", "--output", output
    )
    assert output.read_bytes() == bytes(close.files.get(format="json").content)


def test_a_close_keeps_the_spend_of_projects_it_did_not_list(february):
    """A cancelled project is not a row of the report, but its spend is in the
    total: a restatement of it shows apart, so the adjustments add up."""
    february.other_project.status = "cancelled"
    february.other_project.save()
    month_close(month=FEBRUARY, user=february.finance)
    restate(february.other_project, date(2026, 2, 11), "100")
    rows = adjustments_carried_into(month=MARCH)
    assert [(row.key, row.effective) for row in rows] == [
        ("(no project row)", Decimal("10"))
    ]
