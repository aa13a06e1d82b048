"""FX rates into the reporting currency, loaded from a file, and the rollup rebuilt
for the days they change.

Two formats:

- the European Central Bank's historical reference rates (`eurofxref-hist.csv`, or the
  `.zip` it is published in): a `Date` column, then one column per currency of units
  per euro, `N/A` where the ECB has no rate that day, and a trailing comma. Rates into
  the reporting currency R are cross rates: a currency C is worth R-per-euro divided
  by C-per-euro of R, and a euro R-per-euro. A day without a rate for R gives none.
- a plain CSV with the columns `date,currency,rate`: `rate` is units of the reporting
  currency for one unit of `currency`, as `FxRate` keeps it.

Loading is idempotent: a rate already stored with the same value is left alone, a
restated one is updated, and the rollup is rebuilt only for the days whose rate
changed (a rate stays in force until the next one of its currency), month by month.
"""

import csv
import io
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import IO

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import Max, Min

from billing.importers import ImportFailure
from billing.models import DailyCost, FxRate
from billing.services import daily_costs_rebuild
from core.currencies import ISO_4217_CODES
from core.dates import next_month

RATE_FIELD = FxRate._meta.get_field("rate")
RATE_PLACES = Decimal(1).scaleb(-RATE_FIELD.decimal_places)
RATE_INTEGER_DIGITS = RATE_FIELD.max_digits - RATE_FIELD.decimal_places
ECB_MISSING = frozenset({"", "N/A"})
PLAIN_COLUMNS = ("date", "currency", "rate")
BATCH = 5000

Rates = dict[tuple[str, date], Decimal]


@dataclass
class FxLoadOutcome:
    """What `load_fx_rates` did; `as_json` is what it prints with --json."""

    file_name: str
    file_format: str = ""
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    currencies: list[str] = field(default_factory=list)
    first_day: date | None = None
    last_day: date | None = None
    rebuilt: tuple[date, date] | None = None  # half-open
    rollup_rows: int = 0
    warnings: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def status(self) -> str:
        if self.error:
            return "failed"
        return "loaded" if self.created or self.updated else "unchanged"

    def as_json(self) -> dict:
        rebuilt = self.rebuilt
        return {
            "status": self.status,
            "file": self.file_name,
            "format": self.file_format or None,
            "reporting_currency": settings.REPORTING_CURRENCY,
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "currencies": self.currencies,
            "first_day": self.first_day.isoformat() if self.first_day else None,
            "last_day": self.last_day.isoformat() if self.last_day else None,
            "rollup_rebuilt": {
                "start": rebuilt[0].isoformat(),
                "end": (rebuilt[1] - timedelta(days=1)).isoformat(),
                "rows": self.rollup_rows,
            }
            if rebuilt
            else None,
            "warnings": self.warnings,
            "error": self.error,
        }


def fx_rates_load_file(*, path: Path) -> FxLoadOutcome:
    """Load the rates of an ECB historical file or a plain CSV, then rebuild the
    rollup where they changed. Bad input changes nothing and is named by file, row
    and column."""
    outcome = FxLoadOutcome(file_name=path.name)
    try:
        outcome.file_format, rates, outcome.warnings = fx_rates_read(path)
    except ImportFailure as failure:
        outcome.error = str(failure)
        return outcome
    if not rates:
        outcome.error = f"{path.name}: no rate into {settings.REPORTING_CURRENCY}"
        return outcome
    days = sorted({day for _, day in rates})
    outcome.first_day, outcome.last_day = days[0], days[-1]
    outcome.currencies = sorted({currency for currency, _ in rates})
    changed = _store(rates, outcome)
    span = rollup_span_for_rates(changed)
    if span is None:
        return outcome
    try:
        outcome.rollup_rows = daily_costs_rebuild_in_months(start=span[0], end=span[1])
        outcome.rebuilt = span
    except DatabaseError as exc:
        last = span[1] - timedelta(days=1)
        outcome.error = (
            f"{path.name}: the rates are loaded, but rebuilding the rollup failed "
            f"({exc}); run `rollup_rebuild --start {span[0]} --end {last}`"
        )
    return outcome


def fx_rates_read(path: Path) -> tuple[str, Rates, list[str]]:
    """The file's format, its rates into the reporting currency (rounded to the
    places FxRate keeps) and warnings about what it left out."""
    with _text(path) as stream:
        reader = csv.reader(stream)
        header = [cell.strip() for cell in next(reader, [])]
        names = [cell.lower() for cell in header]
        if names[:1] == ["date"] and set(PLAIN_COLUMNS) <= set(names):
            return "plain", *_plain(reader, names, path.name)
        if names[:1] == ["date"] and len(header) > 1:
            return "ecb", *_ecb(reader, header, path.name)
    raise ImportFailure(
        "is neither an ECB historical rates file (Date,USD,JPY,...) nor a CSV "
        "with the columns date,currency,rate",
        file=path.name,
        row=1,
    )


@contextmanager
def _text(path: Path) -> Iterator[IO[str]]:
    """The CSV's text; from a .zip (as the ECB publishes it), its one CSV."""
    if not zipfile.is_zipfile(path):
        with path.open(encoding="utf-8-sig", newline="") as stream:
            yield stream
        return
    with zipfile.ZipFile(path) as archive:
        members = [n for n in archive.namelist() if n.lower().endswith(".csv")]
        if len(members) != 1:
            raise ImportFailure("a .zip must hold exactly one .csv", file=path.name)
        with archive.open(members[0]) as raw:
            yield io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")


def _ecb(
    reader: Iterable[list[str]], header: list[str], file: str
) -> tuple[Rates, list[str]]:
    reporting = settings.REPORTING_CURRENCY
    columns = {name: index for index, name in enumerate(header) if index and name}
    obsolete = sorted(name for name in columns if name not in ISO_4217_CODES)
    if reporting != "EUR" and reporting not in columns:
        raise ImportFailure(
            f"has no column for the reporting currency {reporting}", file=file, row=1
        )
    rates: Rates = {}
    skipped_days = []
    for line, row in enumerate(reader, start=2):
        if not any(cell.strip() for cell in row):
            continue
        day = _day(row[0], file, line, header[0])
        per_euro = {
            name: _rate(row[index], file, line, name)
            for name, index in columns.items()
            if index < len(row) and row[index].strip() not in ECB_MISSING
        }
        base = Decimal(1) if reporting == "EUR" else per_euro.get(reporting)
        if base is None:
            skipped_days.append(day)
            continue
        for currency, units in per_euro.items():
            if currency not in (reporting, *obsolete):
                rates[currency, day] = _rounded(base / units, file, line, currency)
        if reporting != "EUR":
            rates["EUR", day] = _rounded(base, file, line, reporting)
    warnings = []
    if obsolete:
        warnings.append(f"left out currencies no longer in use: {', '.join(obsolete)}")
    if skipped_days:
        warnings.append(
            f"no {reporting} rate, so no rate at all, on {len(skipped_days)} day(s): "
            f"{', '.join(map(str, skipped_days[:10]))}"
        )
    return rates, warnings


def _plain(
    reader: Iterable[list[str]], names: list[str], file: str
) -> tuple[Rates, list[str]]:
    reporting = settings.REPORTING_CURRENCY
    index = {name: names.index(name) for name in PLAIN_COLUMNS}
    rates: Rates = {}
    reporting_rows = 0
    for line, row in enumerate(reader, start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < len(names):
            raise ImportFailure("has too few cells", file=file, row=line)
        day = _day(row[index["date"]], file, line, "date")
        currency = row[index["currency"]].strip().upper()
        if currency not in ISO_4217_CODES:
            raise ImportFailure(
                f"{currency!r} is not an ISO 4217 code",
                file=file,
                row=line,
                column="currency",
            )
        rate = _rate(row[index["rate"]], file, line, "rate")
        if currency == reporting:
            reporting_rows += 1
            continue
        rounded = _rounded(rate, file, line, "rate")
        if rates.get((currency, day), rounded) != rounded:
            raise ImportFailure(
                f"a second, different rate for {currency} on {day}",
                file=file,
                row=line,
                column="rate",
            )
        rates[currency, day] = rounded
    warnings = []
    if reporting_rows:
        warnings.append(
            f"left out {reporting_rows} row(s) of the reporting currency {reporting}, "
            "which converts at 1"
        )
    return rates, warnings


def _day(text: str, file: str, line: int, column: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise ImportFailure(
            f"{text!r} is not a date (YYYY-MM-DD)", file=file, row=line, column=column
        ) from None


def _rate(text: str, file: str, line: int, column: str) -> Decimal:
    try:
        rate = Decimal(text.strip())
    except InvalidOperation:
        rate = Decimal("NaN")
    if not rate.is_finite() or rate <= 0:
        raise ImportFailure(
            f"{text!r} is not a positive number", file=file, row=line, column=column
        )
    return rate


def _rounded(rate: Decimal, file: str, line: int, column: str) -> Decimal:
    """A rate to the places FxRate keeps; one that rounds to nothing, or is too
    large to keep, is refused rather than stored as another rate."""
    if rate.adjusted() >= RATE_INTEGER_DIGITS:
        raise ImportFailure(
            f"the rate {rate} is too large to keep", file=file, row=line, column=column
        )
    rounded = rate.quantize(RATE_PLACES, ROUND_HALF_UP)
    if not rounded:
        raise ImportFailure(
            f"the rate {rate} rounds to 0 at {RATE_FIELD.decimal_places} places",
            file=file,
            row=line,
            column=column,
        )
    return rounded


def _store(rates: Rates, outcome: FxLoadOutcome) -> list[tuple[str, date]]:
    """Create new rates and update restated ones, in one transaction; returns the
    (currency, day) of every rate that changed."""
    first, last = outcome.first_day, outcome.last_day
    stored = {
        (rate.currency, rate.date): rate
        for rate in FxRate.objects.filter(
            currency__in=outcome.currencies, date__gte=first, date__lte=last
        )
    }
    new, restated = [], []
    for (currency, day), value in rates.items():
        current = stored.get((currency, day))
        if current is None:
            new.append(FxRate(currency=currency, date=day, rate=value))
        elif current.rate != value:
            current.rate = value
            restated.append(current)
    with transaction.atomic():
        FxRate.objects.bulk_create(new, batch_size=BATCH)
        FxRate.objects.bulk_update(restated, ["rate"], batch_size=BATCH)
    outcome.created, outcome.updated = len(new), len(restated)
    outcome.unchanged = len(rates) - len(new) - len(restated)
    return [(r.currency, r.date) for r in (*new, *restated)]


def rollup_span_for_rates(
    changed: Iterable[tuple[str, date]],
) -> tuple[date, date] | None:
    """The half-open range of rollup days whose conversion the changed rates may
    move: from a changed rate's day until its currency's next rate, where the rollup
    has rows of that currency. None when no such day exists."""
    by_currency: dict[str, list[date]] = {}
    for currency, day in changed:
        by_currency.setdefault(currency, []).append(day)
    starts, ends = [], []
    for currency, days in by_currency.items():
        held = DailyCost.objects.filter(billing_currency=currency).aggregate(
            first=Min("date"), last=Max("date")
        )
        if held["first"] is None:
            continue
        # A rate is in force until the next one of its currency.
        reach = _next_rate_day(currency, max(days)) or date.max
        start = max(min(days), held["first"])
        end = min(reach, held["last"] + timedelta(days=1))
        if start < end:
            starts.append(start)
            ends.append(end)
    return (min(starts), max(ends)) if starts else None


def _next_rate_day(currency: str, day: date) -> date | None:
    later = FxRate.objects.filter(currency=currency, date__gt=day).order_by("date")
    return later.values_list("date", flat=True).first()


def daily_costs_rebuild_in_months(*, start: date, end: date) -> int:
    """Rebuild the rollup of [start, end) a calendar month at a time, each month in
    its own transaction: years of history never hold one long lock."""
    rows = 0
    chunk_start = start
    while chunk_start < end:
        chunk_end = min(next_month(chunk_start), end)
        rows += daily_costs_rebuild(start=chunk_start, end=chunk_end)
        chunk_start = chunk_end
    return rows
