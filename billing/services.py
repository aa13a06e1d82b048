"""Allocation of cost records to projects and runs, and the DailyCost rollup."""

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet, Sum
from django.db.models.functions import TruncDate

from billing.models import (
    COST_COLUMNS,
    GPU_HOUR_UNITS,
    CostRecord,
    DailyCost,
    FxRate,
)
from projects.models import AllocationRule, TrainingRun


@dataclass(frozen=True)
class Allocation:
    project_id: int | None
    training_run_id: int | None


UNALLOCATED = Allocation(None, None)


class Allocator:
    """Applies the active rules in order; built once per import, used for every row."""

    def __init__(self) -> None:
        self.rules = list(
            AllocationRule.objects.filter(is_active=True).order_by("priority", "id")
        )
        self.run_ids: dict[tuple[int, str], int] = {
            (project_id, external_id): run_id
            for run_id, project_id, external_id in TrainingRun.objects.values_list(
                "id", "project_id", "external_id"
            )
        }

    def allocate(self, record: Mapping) -> Allocation:
        tags = record.get("tags") or {}
        for rule in self.rules:
            if _rule_matches(rule, record, tags):
                return Allocation(rule.project_id, self._run_id(rule, tags))
        return UNALLOCATED

    def _run_id(self, rule: AllocationRule, tags: Mapping) -> int | None:
        if rule.training_run_id:
            return rule.training_run_id
        if rule.run_tag_key and rule.run_tag_key in tags:
            return self.run_ids.get((rule.project_id, str(tags[rule.run_tag_key])))
        return None


def _rule_matches(rule: AllocationRule, record: Mapping, tags: Mapping) -> bool:
    match rule.match_on:
        case AllocationRule.MatchOn.TAG:
            return rule.tag_key in tags and str(tags[rule.tag_key]) == rule.value
        case AllocationRule.MatchOn.BILLING_ACCOUNT:
            return record.get("billing_account_id") == rule.value
        case AllocationRule.MatchOn.SUB_ACCOUNT:
            return record.get("sub_account_id") == rule.value
        case AllocationRule.MatchOn.RESOURCE_PREFIX:
            return (record.get("resource_id") or "").startswith(rule.value)
        case AllocationRule.MatchOn.SERVICE:
            return record.get("service_name") == rule.value
    return False


def _record_fields(record: CostRecord) -> dict:
    return {
        "tags": record.tags,
        "billing_account_id": record.billing_account_id,
        "sub_account_id": record.sub_account_id,
        "resource_id": record.resource_id,
        "service_name": record.service_name,
    }


@transaction.atomic
def cost_records_reallocate(
    *, queryset: QuerySet[CostRecord] | None = None
) -> tuple[date, date] | None:
    """Re-apply the rules to stored records and rebuild the rollup for the dates moved.

    Returns the half-open range of charge dates whose rollup was rebuilt, or None when
    no record changed allocation.
    """
    allocator = Allocator()
    records = CostRecord.objects.all() if queryset is None else queryset
    changed: list[CostRecord] = []
    for record in records.iterator(chunk_size=5000):
        allocation = allocator.allocate(_record_fields(record))
        if (record.project_id, record.training_run_id) != (
            allocation.project_id,
            allocation.training_run_id,
        ):
            record.project_id = allocation.project_id
            record.training_run_id = allocation.training_run_id
            changed.append(record)
    if not changed:
        return None
    CostRecord.objects.bulk_update(
        changed, ["project_id", "training_run_id"], batch_size=5000
    )
    start = min(r.charge_period_start for r in changed).date()
    end = max(r.charge_period_start for r in changed).date() + timedelta(days=1)
    daily_costs_rebuild(start=start, end=end)
    return start, end


class FxTable:
    """Historical rates into the reporting currency: the latest on or before a day."""

    def __init__(self, currencies: Iterable[str]) -> None:
        self.reporting = settings.REPORTING_CURRENCY
        self.dates: dict[str, list[date]] = {}
        self.rates: dict[str, list[Decimal]] = {}
        for currency, day, rate in (
            FxRate.objects.filter(currency__in=set(currencies))
            .order_by("currency", "date")
            .values_list("currency", "date", "rate")
        ):
            self.dates.setdefault(currency, []).append(day)
            self.rates.setdefault(currency, []).append(rate)

    def rate(self, currency: str, day: date) -> Decimal | None:
        if currency == self.reporting:
            return Decimal("1")
        index = bisect.bisect_right(self.dates.get(currency, []), day) - 1
        return self.rates[currency][index] if index >= 0 else None


@transaction.atomic
def daily_costs_rebuild(*, start: date, end: date) -> int:
    """Rebuild the DailyCost rows of charge dates in [start, end) from CostRecord."""
    start_at = datetime.combine(start, datetime.min.time(), tzinfo=UTC)
    end_at = datetime.combine(end, datetime.min.time(), tzinfo=UTC)
    DailyCost.objects.filter(date__gte=start, date__lt=end).delete()
    gpu_units = Q()
    for unit in GPU_HOUR_UNITS:
        gpu_units |= Q(consumed_unit__iexact=unit)
    groups = list(
        CostRecord.objects.filter(
            charge_period_start__gte=start_at, charge_period_start__lt=end_at
        )
        .annotate(day=TruncDate("charge_period_start", tzinfo=UTC))
        .values(
            "day",
            "project_id",
            "training_run_id",
            "provider_name",
            "service_name",
            "billing_currency",
            "is_provisional",
        )
        .annotate(
            **{column: Sum(column) for column in COST_COLUMNS},
            gpu_hours=Sum("consumed_quantity", filter=gpu_units),
        )
        .order_by()
    )
    fx = FxTable(group["billing_currency"] for group in groups)
    rows = []
    for group in groups:
        rate = fx.rate(group["billing_currency"], group["day"])
        factor = rate if rate is not None else Decimal("1")
        rows.append(
            DailyCost(
                date=group["day"],
                project_id=group["project_id"],
                training_run_id=group["training_run_id"],
                provider_name=group["provider_name"],
                service_name=group["service_name"],
                billing_currency=group["billing_currency"],
                is_provisional=group["is_provisional"],
                fx_rate=rate,
                gpu_hours=group["gpu_hours"] or Decimal("0"),
                **{column: group[column] * factor for column in COST_COLUMNS},
            )
        )
    DailyCost.objects.bulk_create(rows, batch_size=5000)
    return len(rows)
