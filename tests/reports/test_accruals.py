"""Accruals: a month's provisional spend by provider and team, booked by finance, and
the true-up against the final figures once the invoices arrive."""

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.urls import reverse

from accounts.models import Team
from billing.models import COST_COLUMNS, Accrual, CostRecord
from billing.services import daily_costs_rebuild
from reports.closing import month_close
from reports.services import monthly_report
from tests.conftest import make_spend

pytestmark = pytest.mark.django_db

FEBRUARY = date(2026, 2, 1)


@pytest.fixture(autouse=True)
def in_march(time_machine):
    time_machine.move_to(datetime(2026, 3, 10, 9, tzinfo=UTC), tick=False)


@pytest.fixture
def provisional_february(world):
    """Foundation's project: 1,500 final and 700 provisional at AWS; the other team:
    300 provisional at CoreWeave; 60 provisional at AWS that no project has."""
    make_spend(world.project, date(2026, 2, 3), "1500")
    make_spend(world.project, date(2026, 2, 27), "700", is_provisional=True)
    make_spend(
        world.other_project,
        date(2026, 2, 20),
        "300",
        is_provisional=True,
        provider_name="CoreWeave",
    )
    make_spend(None, date(2026, 2, 12), "60", is_provisional=True)


def accruals(**scope):
    scope = scope or {"teams": Team.objects.all(), "whole_organisation": True}
    return monthly_report(month=FEBRUARY, **scope).accruals


def by_key(rows) -> dict:
    return {(row.provider, row.team.slug if row.team else None): row for row in rows}


def invoices_arrive(provider: str, restated: dict[str, str]) -> None:
    """The provider's final data replaces its provisional lines: each provisional
    amount (as a string) becomes final at its restated amount."""
    for record in CostRecord.objects.filter(
        provider_name=provider, is_provisional=True
    ):
        amount = Decimal(restated[str(int(record.effective_cost))])
        for column in COST_COLUMNS:
            setattr(record, column, amount)
        record.is_provisional = False
        record.invoice_id = "INV-FEB"
        record.save()
    daily_costs_rebuild(start=FEBRUARY, end=date(2026, 3, 1))


def test_the_amount_to_accrue_is_the_provisional_spend_by_provider_and_team(
    world, provisional_february
):
    result = accruals()
    rows = by_key(result.rows)
    assert set(rows) == {("AWS", "foundation"), ("AWS", None), ("CoreWeave", "other")}
    foundation = rows["AWS", "foundation"]
    assert (foundation.provisional, foundation.final) == (
        Decimal("700"),
        Decimal("1500"),
    )
    assert (foundation.accrued, foundation.true_up) == (None, None)
    assert result.to_accrue == Decimal("1060")
    assert result.booked_at is None


def test_finance_books_the_accruals_once_and_the_true_up_follows_the_invoices(
    client, world, provisional_february
):
    client.force_login(world.finance)
    url = reverse("report_accruals_book", args=[FEBRUARY])
    assert client.post(url).status_code == 302
    assert Accrual.objects.count() == 3
    booked = Accrual.objects.get(provider="AWS", team=world.team)
    assert (booked.amount, booked.final_at_booking, booked.booked_by) == (
        Decimal("700"),
        Decimal("1500"),
        world.finance,
    )
    client.post(url)  # a second booking is refused: what was booked stays
    assert Accrual.objects.count() == 3

    invoices_arrive("AWS", {"700": "720", "60": "60"})

    result = accruals()
    rows = by_key(result.rows)
    foundation = rows["AWS", "foundation"]
    assert (foundation.provisional, foundation.final) == (0, Decimal("2220"))
    assert foundation.true_up == Decimal("20")  # 2,220 - 1,500 final - 700 accrued
    assert rows["AWS", None].true_up == 0
    assert rows["CoreWeave", "other"].true_up is None  # still awaiting its invoice
    assert (result.accrued, result.true_up) == (Decimal("1060"), Decimal("20"))
    data = client.get(reverse("report_json", args=[FEBRUARY])).json()["accruals"]
    assert data["measure"] == "billed_cost"
    assert Decimal(data["true_up"]) == Decimal("20")
    row = next(r for r in data["rows"] if r["team"] == "foundation")
    assert (row["invoiced"], Decimal(row["accrued"])) == (True, Decimal("700"))
    page = client.get(reverse("report_detail", args=[FEBRUARY])).content.decode()
    assert "awaiting invoice" in page
    assert "Book these accruals" not in page


def test_a_month_without_provisional_spend_has_nothing_to_accrue(client, world):
    make_spend(world.project, date(2026, 2, 3), "1500")
    client.force_login(world.finance)
    page = client.get(reverse("report_detail", args=[FEBRUARY])).content.decode()
    assert "Book these accruals" not in page
    response = client.post(reverse("report_accruals_book", args=[FEBRUARY]))
    assert response.status_code == 302
    assert not Accrual.objects.exists()


def test_leads_see_their_teams_accruals_and_cannot_book(
    client, world, provisional_february
):
    client.force_login(world.lead)
    page = client.get(reverse("report_detail", args=[FEBRUARY])).content.decode()
    assert "Book these accruals" not in page
    assert (
        client.post(reverse("report_accruals_book", args=[FEBRUARY])).status_code == 403
    )
    result = accruals(
        teams=Team.objects.filter(pk=world.team.pk), whole_organisation=False
    )
    assert set(by_key(result.rows)) == {("AWS", "foundation")}


def test_spend_without_a_rate_is_not_accrued_in_the_reporting_currency(world):
    make_spend(
        world.project,
        date(2026, 2, 27),
        "80",
        is_provisional=True,
        billing_currency="EUR",
    )
    assert accruals().rows == []


def test_a_month_closed_without_a_booking_accrues_what_was_then_provisional(
    client, world, provisional_february
):
    month_close(month=FEBRUARY, user=world.finance, reason="AWS invoices in March")
    invoices_arrive("AWS", {"700": "690", "60": "60"})
    client.force_login(world.finance)
    response = client.get(reverse("report_detail", args=[FEBRUARY]))
    rows = by_key(response.context["accruals"].rows)
    # Accrued at the close: 700; the invoice says 690; 1,500 was final already.
    assert rows["AWS", "foundation"].accrued == Decimal("700")
    assert rows["AWS", "foundation"].true_up == Decimal("-10")
    assert rows["CoreWeave", "other"].true_up is None
    assert not Accrual.objects.exists()
    assert 'id="accruals"' in response.content.decode()
