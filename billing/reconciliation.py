"""The month's cost records, read from CostRecord itself, for the monthly report's
reconciliation with the rollup it is made from; and each invoice's billed total
against the total finance entered from the provider's invoice.

"The month's cost records" are counted by charge date as the rollup counts them: a
charge of a day or less (or longer than a quarter) on the day it starts, a longer one
spread over its days by `day_shares`, so that the month holds the shares of its own
days, to the eleventh decimal. Amounts are kept per day, currency and project: each
is converted with the rate in force on its day (`FxTable`), rounded once
(`converted_amount`), which is how the rollup rounds too. An invoice, by contrast,
covers a billing period: its records are those of the month's billing period.
"""

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from django.db.models import Sum
from django.db.models.functions import TruncDate

from billing.models import BillingSource, CostRecord, ProviderInvoice
from billing.services import (
    LONGEST_SPREAD,
    FxTable,
    converted_amount,
    counted_on_first_day,
    day_shares,
)
from core.currencies import ZERO
from core.dates import next_month

# The measures reconciled: cash (what invoices say) and amortised (the default).
MEASURES = ("billed_cost", "effective_cost")
DayKey = tuple[date, str, int | None]  # day, billing currency, project id


@dataclass
class CurrencyTotals:
    """One currency's cost in one measure: in the billing currency, and converted
    into the reporting currency where its days have a rate."""

    amount: Decimal = ZERO
    converted: Decimal = ZERO  # in the reporting currency
    unconverted: Decimal = ZERO  # in the billing currency: days without a rate

    def add(self, amount: Decimal, rate: Decimal | None) -> None:
        self.amount += amount
        if rate is None:
            self.unconverted += amount
        else:
            self.converted += converted_amount(amount, rate)


ProjectKey = tuple[str, str, int | None]  # measure, billing currency, project id


def cost_records_by_project(*, month: date) -> dict[ProjectKey, CurrencyTotals]:
    """The month's cost records by measure, billing currency and project (None: the
    unallocated), each day converted with its own rate."""
    fx = FxTable()
    totals: dict[ProjectKey, CurrencyTotals] = defaultdict(CurrencyTotals)
    for (day, currency, project), amounts in _by_day(month).items():
        rate = fx.rate(currency, day)
        for measure, amount in amounts.items():
            totals[measure, currency, project].add(amount, rate)
    return dict(totals)


def _by_day(month: date) -> dict[DayKey, dict[str, Decimal]]:
    start_at = datetime.combine(month, datetime.min.time(), tzinfo=UTC)
    end_at = datetime.combine(next_month(month), datetime.min.time(), tzinfo=UTC)
    amounts: dict[DayKey, dict[str, Decimal]] = defaultdict(
        lambda: dict.fromkeys(MEASURES, ZERO)
    )
    short = (
        CostRecord.objects.filter(
            counted_on_first_day(),
            charge_period_start__gte=start_at,
            charge_period_start__lt=end_at,
        )
        .annotate(day=TruncDate("charge_period_start", tzinfo=UTC))
        .values("day", "billing_currency", "project_id")
        .annotate(**{measure: Sum(measure) for measure in MEASURES})
        .order_by()
    )
    for group in short:
        row: dict[str, Any] = dict(group)
        key = (row["day"], row["billing_currency"], row["project_id"])
        for measure in MEASURES:
            amounts[key][measure] += row[measure]
    # Charges spread over their days: those that reach into the month.
    longer = CostRecord.objects.filter(
        charge_period_start__gte=start_at - LONGEST_SPREAD,
        charge_period_start__lt=end_at,
        charge_period_end__gt=start_at,
    ).exclude(counted_on_first_day())
    fields = ("charge_period_start", "charge_period_end", *MEASURES)
    for record in longer.values(*fields, "billing_currency", "project_id").iterator():
        shares = day_shares(
            record["charge_period_start"],
            record["charge_period_end"],
            {measure: record[measure] for measure in MEASURES},
        )
        for day, share in shares:
            if month <= day < next_month(month):
                key = (day, record["billing_currency"], record["project_id"])
                for measure in MEASURES:
                    amounts[key][measure] += share[measure]
    return amounts


@dataclass(frozen=True)
class InvoiceCheck:
    """The billed cost of one invoice's cost records against the invoice's total as
    entered (None: not entered). `sources` names the billing sources of the records."""

    sources: tuple[str, ...]
    provider: str
    invoice_id: str  # empty: records of the month not invoiced yet
    currency: str
    billed: Decimal
    invoice: ProviderInvoice | None = None

    @property
    def entered(self) -> Decimal | None:
        return self.invoice.amount if self.invoice else None

    @property
    def difference(self) -> Decimal | None:
        """The cost records' billed total less the invoice's total."""
        if self.invoice is None:
            return None
        return (self.billed - self.invoice.amount) or ZERO  # 0, never 0E-11

    @property
    def flagged(self) -> bool:
        return bool(self.difference)


@dataclass(frozen=True)
class Billed:
    source_id: int
    source: str
    provider: str
    invoice_id: str
    currency: str
    billed: Decimal

    def invoiced_by(self, invoice: ProviderInvoice) -> bool:
        return (
            self.provider.casefold() == invoice.provider.casefold()
            and self.invoice_id == invoice.invoice_id
            and self.currency == invoice.currency
            and invoice.source_id in (None, self.source_id)
        )


def invoice_checks(
    *, month: date, billed: list[Billed] | None = None
) -> list[InvoiceCheck]:
    """Every invoice of the month's billing period, by source and provider invoice
    id: its cost records' billed total (`billed`, read now when not given), and
    against it the total finance entered from the invoice (ProviderInvoice) where
    there is one. An entered invoice without records is listed with a billed total of
    zero."""
    if billed is None:
        billed = billed_by_invoice(month)
    checks, matched = [], set()
    invoices = ProviderInvoice.objects.filter(month=month).select_related("source")
    for invoice in invoices.order_by("provider", "invoice_id"):
        rows = [row for row in billed if row.invoiced_by(invoice)]
        matched.update(rows)
        checks.append(
            InvoiceCheck(
                sources=tuple(sorted({row.source for row in rows}))
                or ((invoice.source.name,) if invoice.source else ()),
                provider=invoice.provider,
                invoice_id=invoice.invoice_id,
                currency=invoice.currency,
                billed=sum((row.billed for row in rows), ZERO),
                invoice=invoice,
            )
        )
    checks += [
        InvoiceCheck(
            sources=(row.source,),
            provider=row.provider,
            invoice_id=row.invoice_id,
            currency=row.currency,
            billed=row.billed,
        )
        for row in billed
        if row not in matched
    ]
    return sorted(checks, key=lambda c: (c.provider, c.invoice_id, c.sources))


def billed_by_invoice(month: date) -> list[Billed]:
    start_at = datetime.combine(month, datetime.min.time(), tzinfo=UTC)
    end_at = datetime.combine(next_month(month), datetime.min.time(), tzinfo=UTC)
    sources = dict(BillingSource.objects.values_list("pk", "name"))
    rows = (
        # By source first: the index on (source, billing period start) finds them.
        CostRecord.objects.filter(
            source__in=list(sources),
            billing_period_start__gte=start_at,
            billing_period_start__lt=end_at,
        )
        .values("source_id", "provider_name", "invoice_id", "billing_currency")
        .annotate(billed=Sum("billed_cost"))
        .order_by()
    )
    return [
        Billed(
            source_id=row["source_id"],
            source=sources[row["source_id"]],
            provider=row["provider_name"],
            invoice_id=row["invoice_id"],
            currency=row["billing_currency"],
            billed=row["billed"],
        )
        for row in rows
    ]
