"""Running `billing_import` and `billing_sync` as an operator does, with --json, and
totalling files and tables independently of the importers to check them against."""

import csv
import io
import json
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db.models import Manager, QuerySet

from billing.models import BillingSource

STORED_PLACES = Decimal("1e-11")  # what CostRecord keeps of a cost


def run_import(path: Path, source: str, **options) -> tuple[int, dict]:
    """The exit code of `billing_import --json` and the JSON it printed."""
    out = io.StringIO()
    try:
        call_command(
            "billing_import", str(path), source=source, json=True, stdout=out, **options
        )
        code = 0
    except CommandError as error:
        code = error.returncode
    return code, json.loads(out.getvalue())


def sync_json(*args: str) -> dict:
    out = io.StringIO()
    call_command("billing_sync", *args, json=True, stdout=out)
    return json.loads(out.getvalue())


def sync(source: BillingSource) -> dict:
    """The result `billing_sync --json` printed for one source."""
    return sync_json("--source", source.name)["sources"][0]


def failed_sync(source: BillingSource) -> str:
    with pytest.raises(CommandError) as failure:
        sync(source)
    return str(failure.value)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as text:
        return list(csv.DictReader(text))


def write_csv(
    path: Path, rows: list[dict[str, str]], header: list[str] | None = None
) -> Path:
    with path.open("w", encoding="utf-8", newline="") as text:
        writer = csv.DictWriter(text, fieldnames=header or list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def column_sums(
    rows: Iterable[dict[str, str]],
    cost: str,
    currency: str,
    *,
    default_currency: str | None = None,
) -> dict[str, Decimal]:
    """A file's own total of a cost column per currency, parsed independently of the
    importer: each cost as written ("$1,000.00" too) to the 11 places CostRecord keeps
    (Azure writes some with 16). `default_currency` is for rows that name none, as the
    FOCUS specification's examples leave BillingCurrency out."""
    sums: dict[str, Decimal] = {}
    for row in rows:
        amount = Decimal(row[cost].strip().replace("$", "").replace(",", ""))
        if default_currency is None:
            code = row[currency]
        else:
            code = row.get(currency) or default_currency
        sums[code] = sums.get(code, Decimal(0)) + amount.quantize(STORED_PLACES)
    return sums


def as_decimals(amounts: dict[str, str]) -> dict[str, Decimal]:
    """Totals per currency as the JSON result writes them, as Decimals."""
    return {currency: Decimal(amount) for currency, amount in amounts.items()}


def total(queryset: Manager | QuerySet, column: str = "billed_cost") -> Decimal:
    return sum(queryset.values_list(column, flat=True), Decimal(0))
