"""The monthly report's reconciliation: projects plus unallocated against the month's
cost records, per currency and after conversion, exact to the last decimal; and each
invoice's billed total against the total finance entered."""

import csv
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import pytest
from django.urls import reverse

from accounts.models import Team
from billing.models import BillingSource, CostRecord, FxRate, ProviderInvoice
from billing.services import billing_import_file, daily_costs_rebuild
from projects.models import Project
from reports.checks import records_check_run
from reports.models import RecordsCheck
from reports.services import monthly_report
from tests.conftest import make_cost_record, make_spend
from tests.data import AWS_CUR_LEGACY, FOCUS_REAL

pytestmark = pytest.mark.django_db

FEBRUARY = date(2026, 2, 1)
SEPTEMBER_2024 = date(2024, 9, 1)
NOVEMBER_2023 = date(2023, 11, 1)
# Rates of a dollar in euros, the reporting currency of the real-sample tests.
USD_IN_EUR = {
    date(2023, 10, 1): Decimal("0.9345678912"),
    date(2024, 9, 1): Decimal("0.9123456789"),
    date(2024, 9, 15): Decimal("0.8987654321"),
}
STORED = Decimal("1E-11")


@pytest.fixture(autouse=True)
def in_march(time_machine):
    time_machine.move_to(datetime(2026, 3, 10, 9, tzinfo=UTC), tick=False)


def finance_report(month: date):
    return monthly_report(
        month=month, teams=Team.objects.all(), whole_organisation=True
    )


def rows_by(report) -> dict:
    return {(r.measure, r.currency): r for r in report.reconciliation.by_currency}


def usd_rate(day: date) -> Decimal:
    return USD_IN_EUR[max(d for d in USD_IN_EUR if d <= day)]


def focus_file_by_day() -> dict[date, dict[str, Decimal]]:
    """The sample's own BilledCost and EffectiveCost, by the day each charge starts
    (every charge in it lasts a day or less, all in dollars)."""
    days: dict[date, dict[str, Decimal]] = defaultdict(
        lambda: {"billed_cost": Decimal(0), "effective_cost": Decimal(0)}
    )
    with FOCUS_REAL.open(encoding="utf-8-sig", newline="") as stream:
        for row in csv.DictReader(stream):
            assert row["BillingCurrency"] == "USD"
            day = date.fromisoformat(row["ChargePeriodStart"][:10])
            days[day]["billed_cost"] += Decimal(row["BilledCost"])
            days[day]["effective_cost"] += Decimal(row["EffectiveCost"])
    return days


def test_the_real_focus_sample_reconciles_per_currency_and_after_conversion(settings):
    settings.REPORTING_CURRENCY = "EUR"
    for day, rate in USD_IN_EUR.items():
        FxRate.objects.create(currency="USD", date=day, rate=rate)
    assert billing_import_file(path=FOCUS_REAL, source_name="AWS FOCUS").run.status == (
        "imported"
    )

    report = finance_report(SEPTEMBER_2024)

    days = focus_file_by_day()
    rows = rows_by(report)
    assert set(rows) == {("billed_cost", "USD"), ("effective_cost", "USD")}
    for measure in ("billed_cost", "effective_cost"):
        in_dollars = sum(amounts[measure] for amounts in days.values())
        # Each day's dollars converted at its rate and rounded once to the stored
        # eleven places: worked out from the file, not from the database.
        in_euros = sum(
            (amounts[measure] * usd_rate(day)).quantize(STORED, ROUND_HALF_UP)
            for day, amounts in days.items()
        )
        row = rows[measure, "USD"]
        assert row.records.amount == row.report.amount == in_dollars
        assert row.records.converted == row.report.converted == in_euros
        assert (row.difference, row.converted_difference) == (0, 0)
    reconciliation = report.reconciliation
    assert reconciliation.records_total == reconciliation.report_total
    assert (
        reconciliation.records_total == rows["effective_cost", "USD"].report.converted
    )
    assert reconciliation.balanced
    assert report.as_json()["reconciliation"]["difference"] == "0"
    assert report.as_json()["reconciliation"]["by_currency"][0]["difference"] == "0"


def test_the_real_aws_cur_sample_reconciles_its_month_long_taxes_too(settings):
    """Its Tax lines cover all of November: the rollup spreads them over the days."""
    settings.REPORTING_CURRENCY = "EUR"
    for day, rate in USD_IN_EUR.items():
        FxRate.objects.create(currency="USD", date=day, rate=rate)
    billing_import_file(path=AWS_CUR_LEGACY, source_name="AWS CUR")
    with AWS_CUR_LEGACY.open(encoding="utf-8-sig", newline="") as stream:
        unblended = sum(
            Decimal(row["lineItem/UnblendedCost"]) for row in csv.DictReader(stream)
        )

    report = finance_report(NOVEMBER_2023)

    billed = rows_by(report)["billed_cost", "USD"]
    assert billed.records.amount == billed.report.amount == unblended
    assert billed.converted_difference == 0
    assert billed.records.converted == billed.report.converted > 0
    assert report.reconciliation.difference == 0
    assert report.reconciliation.balanced
    # The sample is not invoiced yet: its billed total is one line without an id.
    [check] = report.reconciliation.invoices
    assert (check.sources, check.invoice_id, check.billed) == (
        ("AWS CUR",),
        "",
        unblended,
    )


def test_a_long_charge_counts_only_its_days_in_the_month(world):
    """Ten days from 27 February: 2/10 in February; the rest is March's."""
    start = datetime(2026, 2, 27, tzinfo=UTC)
    make_cost_record(
        date(2026, 2, 27),
        "10",
        project=world.project,
        charge_period_end=start + timedelta(days=10),
    )
    make_spend(world.project, date(2026, 2, 27), "1")
    row = rows_by(finance_report(FEBRUARY))["effective_cost", "USD"]
    assert row.records.amount == row.report.amount == Decimal("3")
    assert row.difference == 0


def cancelled_project(world) -> Project:
    """A project of the team that the report leaves out."""
    return Project.objects.create(
        team=world.team,
        owner=world.lead,
        slug="dropped",
        name="Dropped",
        kind=Project.Kind.FINE_TUNING,
        start_date=date(2026, 1, 1),
        end_date=date(2026, 12, 31),
        status=Project.Status.CANCELLED,
    )


def test_spend_the_report_leaves_out_shows_as_a_difference(world):
    cancelled = cancelled_project(world)
    make_spend(world.project, date(2026, 2, 3), "100")
    make_spend(cancelled, date(2026, 2, 4), "40")
    reconciliation = finance_report(FEBRUARY).reconciliation
    assert (reconciliation.records_total, reconciliation.report_total) == (140, 100)
    assert reconciliation.difference == Decimal("-40")
    assert not reconciliation.balanced


def test_cost_records_not_yet_in_the_rollup_show_as_a_difference(world):
    make_spend(world.project, date(2026, 2, 3), "100")
    make_cost_record(date(2026, 2, 5), "0.00000000001", project=world.project)
    row = rows_by(finance_report(FEBRUARY))["effective_cost", "USD"]
    assert row.difference == Decimal("-0.00000000001")


@pytest.fixture
def invoiced(world):
    """February's billing period of the AWS export: two lines of invoice INV-9, one
    of INV-10, and one line not invoiced yet."""
    source = world.source
    for amount, invoice_id in [
        ("100.00", "INV-9"),
        ("50.25", "INV-9"),
        ("70", "INV-10"),
        ("5", ""),
    ]:
        make_cost_record(
            date(2026, 2, 10),
            amount,
            source=source,
            invoice_id=invoice_id,
            project=world.project,
        )
    daily_costs_rebuild(start=FEBRUARY, end=date(2026, 3, 1))
    return source


def test_an_invoice_entered_with_another_total_is_flagged(client, world, invoiced):
    ProviderInvoice.objects.create(
        provider="AWS",
        invoice_id="INV-9",
        source=invoiced,
        month=FEBRUARY,
        amount=Decimal("150.20"),
        currency="USD",
    )
    ProviderInvoice.objects.create(
        provider="aws", invoice_id="INV-10", month=FEBRUARY, amount=70, currency="USD"
    )
    ProviderInvoice.objects.create(
        provider="Lambda", invoice_id="L-1", month=FEBRUARY, amount=9, currency="USD"
    )

    checks = {c.invoice_id: c for c in finance_report(FEBRUARY).reconciliation.invoices}

    nine = checks["INV-9"]
    assert (nine.billed, nine.entered, nine.difference, nine.flagged) == (
        Decimal("150.25"),
        Decimal("150.20"),
        Decimal("0.05"),
        True,
    )
    assert (checks["INV-10"].difference, checks["INV-10"].flagged) == (0, False)
    assert checks["INV-10"].sources == ("AWS export",)  # any source: it has one
    assert (checks["L-1"].billed, checks["L-1"].difference) == (0, Decimal("-9"))
    assert (checks[""].billed, checks[""].invoice) == (Decimal("5"), None)
    records_check_run(FEBRUARY)
    client.force_login(world.finance)
    page = client.get(reverse("report_detail", args=[FEBRUARY])).content.decode()
    assert 'data-testid="invoice-difference">0.05 USD<' in page
    data = client.get(reverse("report_json", args=[FEBRUARY])).json()
    invoices = data["reconciliation"]["invoices"]
    assert [i["invoice_id"] for i in invoices if i["flagged"]] == ["INV-9", "L-1"]


def test_an_invoice_of_another_source_does_not_match(world, invoiced):
    other = BillingSource.objects.create(name="Other AWS", kind="focus")
    ProviderInvoice.objects.create(
        provider="AWS",
        invoice_id="INV-9",
        source=other,
        month=FEBRUARY,
        amount=Decimal("150.25"),
        currency="USD",
    )
    checks = finance_report(FEBRUARY).reconciliation.invoices
    entered = next(c for c in checks if c.invoice)
    assert (entered.billed, entered.flagged, entered.sources) == (
        0,
        True,
        ("Other AWS",),
    )
    assert CostRecord.objects.filter(invoice_id="INV-9").count() == 2


def test_a_lead_sees_the_reconciliation_of_their_teams_without_invoices(
    client, world, invoiced
):
    make_spend(world.other_project, date(2026, 2, 11), "90")
    records_check_run(FEBRUARY)
    client.force_login(world.lead)
    data = client.get(reverse("report_json", args=[FEBRUARY])).json()
    reconciliation = data["reconciliation"]
    assert Decimal(reconciliation["records_total"]) == Decimal("225.25")
    assert reconciliation["difference"] == "0"
    assert reconciliation["invoices"] == []


def test_an_admin_enters_an_invoice_and_sees_the_billed_total_beside_it(
    client, world, invoiced
):
    client.force_login(world.admin)
    response = client.post(
        reverse("admin:billing_providerinvoice_add"),
        {
            "provider": "AWS",
            "invoice_id": "INV-9",
            "source": invoiced.pk,
            "month": "2026-02-01",
            "amount": "150.00",
            "currency": "USD",
            "notes": "",
        },
    )
    assert response.status_code == 302
    invoice = ProviderInvoice.objects.get()
    page = client.get(
        reverse("admin:billing_providerinvoice_change", args=[invoice.pk])
    ).content.decode()
    assert "150.25 USD (difference 0.25 USD)" in page
    assert client.get(reverse("admin:billing_accrual_changelist")).status_code == 200


# The page reads a stored check of the cost records (reports.checks): the records
# are read by a worker, never in the web request.


def test_a_stored_check_gives_the_reconciliation_read_now(world, invoiced):
    cancelled = cancelled_project(world)
    make_spend(cancelled, date(2026, 2, 4), "40")
    records_check_run(FEBRUARY)
    lead_teams = Team.objects.filter(pk=world.team.pk)
    for teams, everyone in ((Team.objects.all(), True), (lead_teams, False)):
        now = monthly_report(month=FEBRUARY, teams=teams, whole_organisation=everyone)
        stored = monthly_report(
            month=FEBRUARY, teams=teams, whole_organisation=everyone, stored_check=True
        )
        fresh, kept = (
            now.as_json()["reconciliation"],
            stored.as_json()["reconciliation"],
        )
        assert kept["status"] == "checked"
        assert Decimal(kept["difference"]) == Decimal("-40")
        del fresh["checked_at"], kept["checked_at"]
        assert kept == fresh


def test_a_report_whose_figures_changed_since_the_check_queues_one(
    client, world, invoiced, django_capture_on_commit_callbacks
):
    records_check_run(FEBRUARY)
    make_spend(world.project, date(2026, 2, 20), "7")  # an import, rolled up
    client.force_login(world.finance)
    with django_capture_on_commit_callbacks() as queued:
        data = client.get(reverse("report_json", args=[FEBRUARY])).json()
    reconciliation = data["reconciliation"]
    assert reconciliation["status"] == "checking"
    assert (reconciliation["records_total"], reconciliation["difference"]) == (
        None,
        None,
    )
    assert Decimal(reconciliation["report_total"]) == Decimal(
        data["totals"]["effective"]
    )
    assert len(queued) == 1  # the check, queued once
    with django_capture_on_commit_callbacks() as again:
        page = client.get(reverse("report_detail", args=[FEBRUARY])).content.decode()
    assert 'data-testid="reconciliation-checking"' in page
    assert again == []  # already queued moments ago

    records_check_run(FEBRUARY)  # the worker's task

    data = client.get(reverse("report_json", args=[FEBRUARY])).json()
    assert data["reconciliation"]["status"] == "checked"
    assert data["reconciliation"]["difference"] == "0"
    assert RecordsCheck.objects.get().requested_at is None


def test_a_check_queued_long_ago_and_never_done_is_queued_again(
    client, world, invoiced, time_machine, django_capture_on_commit_callbacks
):
    client.force_login(world.finance)
    with django_capture_on_commit_callbacks() as first:
        client.get(reverse("report_json", args=[FEBRUARY]))
    time_machine.shift(timedelta(minutes=6))  # its worker died
    with django_capture_on_commit_callbacks() as second:
        client.get(reverse("report_json", args=[FEBRUARY]))
    assert (len(first), len(second)) == (1, 1)


def test_an_import_queues_the_check_of_its_billing_periods(
    world, eager_tasks, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        billing_import_file(path=FOCUS_REAL, source_name="Real FOCUS")
    checks = RecordsCheck.objects.filter(checked_at__isnull=False)
    assert checks.exists()
    for check in checks:
        report = monthly_report(
            month=check.month,
            teams=Team.objects.all(),
            whole_organisation=True,
            stored_check=True,
        )
        assert report.reconciliation.balanced, check.month
