"""load_fx_rates: the ECB's historical file and a plain CSV into FxRate, idempotent,
and the rollup rebuilt for the days whose rate changed. Expected rates are worked
out by hand from the file (tests/data/fx)."""

import io
import json
import zipfile
from datetime import date
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from billing.models import DailyCost, FxRate
from tests.conftest import make_spend
from tests.data import ECB_RATES, PLAIN_RATES

pytestmark = pytest.mark.django_db

JAN_30, FEB_3, FEB_4, FEB_5, FEB_6 = (
    date(2026, 1, 30),
    date(2026, 2, 3),
    date(2026, 2, 4),
    date(2026, 2, 5),
    date(2026, 2, 6),
)


def load(path, *options: str) -> tuple[dict, int]:
    out = io.StringIO()
    try:
        call_command("load_fx_rates", str(path), "--json", *options, stdout=out)
    except CommandError as error:
        return json.loads(out.getvalue()), error.returncode
    return json.loads(out.getvalue()), 0


def stored(currency: str) -> dict[date, Decimal]:
    return dict(FxRate.objects.filter(currency=currency).values_list("date", "rate"))


def test_the_ecb_file_gives_cross_rates_into_the_reporting_currency():
    result, code = load(ECB_RATES)
    assert code == 0
    assert (result["status"], result["format"], result["created"]) == (
        "loaded",
        "ecb",
        11,
    )
    # A euro is the USD column; a currency C is USD-per-euro / C-per-euro.
    assert stored("EUR") == {
        JAN_30: Decimal("1.05"),
        FEB_4: Decimal("1.1"),
        FEB_5: Decimal("1.09"),
        FEB_6: Decimal("1.08"),
    }
    assert stored("JPY") == {
        JAN_30: Decimal("0.0066455696"),  # 1.05 / 158
        FEB_4: Decimal("0.0067692308"),  # 1.10 / 162.50
        FEB_6: Decimal("0.00675"),  # 1.08 / 160; N/A on 5 February
    }
    assert stored("GBP") == {
        JAN_30: Decimal("1.2650602410"),  # 1.05 / 0.83
        FEB_4: Decimal("1.2790697674"),
        FEB_5: Decimal("1.2823529412"),
        FEB_6: Decimal("1.2857142857"),
    }
    # No USD column in the table (it is the reporting currency), no obsolete CYP,
    # and nothing on 3 February, which has no USD rate to cross with.
    assert set(FxRate.objects.values_list("currency", flat=True)) == {
        "EUR",
        "JPY",
        "GBP",
    }
    assert not FxRate.objects.filter(date=FEB_3).exists()
    warnings = " ".join(result["warnings"])
    assert "CYP" in warnings and "2026-02-03" in warnings


def test_with_euros_as_the_reporting_currency_the_ecb_rates_are_inverted(settings):
    settings.REPORTING_CURRENCY = "EUR"
    result, _ = load(ECB_RATES)
    assert result["created"] == 13
    assert stored("USD") == {
        JAN_30: Decimal("0.9523809524"),
        FEB_4: Decimal("0.9090909091"),
        FEB_5: Decimal("0.9174311927"),
        FEB_6: Decimal("0.9259259259"),
    }
    assert stored("JPY")[FEB_3] == Decimal("0.0062111801")  # 1 / 161
    assert not FxRate.objects.filter(currency="EUR").exists()


def test_the_same_file_twice_changes_nothing_and_a_restated_rate_updates(tmp_path):
    load(ECB_RATES)
    again, code = load(ECB_RATES)
    assert code == 0
    assert (again["status"], again["created"], again["updated"]) == ("unchanged", 0, 0)
    assert again["unchanged"] == 11
    restated = tmp_path / "eurofxref-hist.csv"
    restated.write_text(
        ECB_RATES.read_text().replace("2026-02-06,1.0800", "2026-02-06,1.0700")
    )
    result, _ = load(restated)
    # The USD rate of 6 February moved every rate crossed with it that day.
    assert (result["status"], result["created"], result["updated"]) == ("loaded", 0, 3)
    assert stored("EUR")[FEB_6] == Decimal("1.07")
    assert stored("JPY")[FEB_6] == Decimal("0.0066875")
    assert stored("GBP")[FEB_6] == Decimal("1.2738095238")
    assert FxRate.objects.count() == 11


def test_the_zip_the_ecb_publishes_is_read_as_its_csv(tmp_path):
    archive = tmp_path / "eurofxref-hist.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.write(ECB_RATES, "eurofxref-hist.csv")
    result, _ = load(archive)
    assert (result["format"], result["created"]) == ("ecb", 11)


def test_the_plain_format_loads_each_rate_as_given():
    result, code = load(PLAIN_RATES)
    assert (code, result["format"], result["created"]) == (0, "plain", 3)
    assert stored("EUR") == {
        date(2026, 1, 1): Decimal("1.10"),
        date(2026, 2, 1): Decimal("1.20"),
    }
    assert stored("JPY") == {date(2026, 2, 10): Decimal("0.0065")}
    assert (result["first_day"], result["last_day"]) == ("2026-01-01", "2026-02-10")


def test_loading_rebuilds_the_rollup_of_the_days_the_new_rates_convert(world):
    make_spend(world.project, date(2026, 1, 20), "100", billing_currency="EUR")
    make_spend(world.project, FEB_5, "100", billing_currency="EUR")
    make_spend(world.project, date(2026, 2, 7), "100", billing_currency="EUR")
    assert not DailyCost.objects.filter(fx_rate__isnull=False).exists()

    result, _ = load(ECB_RATES)

    rows = DailyCost.objects.values_list("date", "fx_rate", "effective_cost")
    assert {day: (rate, amount) for day, rate, amount in rows} == {
        date(2026, 1, 20): (None, Decimal("100")),  # before the first rate: none
        FEB_5: (Decimal("1.09"), Decimal("109")),
        date(2026, 2, 7): (Decimal("1.08"), Decimal("108")),  # Friday's rate
    }
    assert result["rollup_rebuilt"] == {
        "start": "2026-01-30",
        "end": "2026-02-07",
        "rows": 2,
    }
    assert load(ECB_RATES)[0]["rollup_rebuilt"] is None  # nothing changed


def test_a_bad_value_changes_nothing_and_is_named_by_file_row_and_column(tmp_path):
    bad = tmp_path / "rates.csv"
    bad.write_text("date,currency,rate\n2026-01-01,EUR,1.1\n2026-01-02,EUR,abc\n")
    result, code = load(bad)
    assert code == 1
    assert result["status"] == "failed"
    assert (
        result["error"]
        == "rates.csv, row 3, column rate: 'abc' is not a positive number"
    )
    assert not FxRate.objects.exists()


def test_a_file_in_neither_format_is_refused(tmp_path):
    other = tmp_path / "other.csv"
    other.write_text("day,amount\n2026-01-01,3\n")
    result, code = load(other)
    assert code == 1
    assert "neither an ECB historical rates file" in result["error"]


def test_a_rate_entered_in_the_admin_rebuilds_the_rollup(
    client, world, eager_tasks, django_capture_on_commit_callbacks
):
    make_spend(world.project, FEB_5, "100", billing_currency="EUR")
    client.force_login(world.admin)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("admin:billing_fxrate_add"),
            {"currency": "EUR", "date": "2026-02-01", "rate": "1.25"},
        )
    assert response.status_code == 302
    row = DailyCost.objects.get()
    assert (row.fx_rate, row.effective_cost) == (Decimal("1.25"), Decimal("125"))
