"""The cost explorer: spend over any date range, filtered and grouped by any dimension.

One aggregate query answers a question. It reads the DailyCost rollup when the grouping
and every filter are among the rollup's columns, and the cost records when one is not
(region, sub-account, resource, a tag). Read from the records, spend is counted as the
rollup counts it: a charge of a day or less on the day it starts, a longer one spread
over its days (`day_shares`), each day's amount converted with the FX rate in force on
that day. Spend in a currency without a rate comes back apart, never added to the rest.

The query string is the shareable form of a question (`ExplorerQuery.params`), and
`explorer_url` builds one for any figure of the portal.
"""

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from dateutil.relativedelta import relativedelta
from django.conf import settings
from django.db import connection, transaction
from django.db.models import (
    Case,
    Count,
    DateField,
    F,
    Max,
    Min,
    Model,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.expressions import Combinable
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import TruncDate, TruncMonth
from django.urls import reverse

from accounts.models import Team, User
from accounts.permissions import visible_to
from billing.models import BillingSource, CostRecord, DailyCost
from billing.services import LONGEST_SPREAD, FxTable, counted_on_first_day, day_shares
from core.currencies import ZERO
from core.dates import month_start, next_month
from projects.models import Project, TrainingRun

# The filter value of "nothing there": unallocated spend, no run, no region, no tag.
NONE = "(none)"
MAX_MONTHS = 24  # the longest range one question covers
MAX_DAILY_DAYS = 92  # daily bars beyond a quarter are unreadable: months instead
DEFAULT_DAILY_DAYS = 62  # without a grain asked for, up to two months show days
CHART_GROUPS = 8  # the largest groups get their own series; the rest is "Other"
TAG_PREFIX = "tag:"


@dataclass(frozen=True)
class Dimension:
    """Something cost can be filtered and grouped by."""

    name: str  # in the query string
    label: str
    record: str  # the CostRecord field
    rollup: str | None  # the DailyCost field; None when only the records have it
    model: type[Model] | None = None  # its values are rows of this model
    none_label: str = "(none)"
    name_field: str | None = None  # a readable name beside the id
    boolean: bool = False


DIMENSIONS: dict[str, Dimension] = {
    dimension.name: dimension
    for dimension in [
        Dimension(
            "team", "Team", "project__team", "project__team", Team, "Unallocated"
        ),
        Dimension("project", "Project", "project", "project", Project, "Unallocated"),
        Dimension(
            "run", "Training run", "training_run", "training_run", TrainingRun, "No run"
        ),
        Dimension("provider", "Provider", "provider_name", "provider_name"),
        Dimension("source", "Billing source", "source", "source", BillingSource),
        Dimension(
            "service", "Service", "service_name", "service_name", None, "(no service)"
        ),
        Dimension(
            "service_category",
            "Service category",
            "service_category",
            "service_category",
            None,
            "(no category)",
        ),
        Dimension(
            "charge_category", "Charge category", "charge_category", "charge_category"
        ),
        Dimension(
            "provisional",
            "Provisional",
            "is_provisional",
            "is_provisional",
            boolean=True,
        ),
        Dimension("region", "Region", "region_id", None, None, "(no region)"),
        Dimension(
            "sub_account",
            "Sub-account",
            "sub_account_id",
            None,
            None,
            "(no sub-account)",
            name_field="sub_account_name",
        ),
        Dimension(
            "resource",
            "Resource",
            "resource_id",
            None,
            None,
            "(no resource)",
            name_field="resource_name",
        ),
    ]
}
# The next grouping when one clicks into a group: from the coarse to the fine.
DRILL_DOWN = {
    "team": "project",
    "project": "service",
    "run": "service",
    "provider": "service",
    "source": "service",
    "service": "resource",
    "service_category": "service",
    "charge_category": "service",
    "provisional": "service",
    "region": "service",
    "sub_account": "service",
    "resource": "run",
}


@dataclass(frozen=True)
class Measure:
    field: str
    label: str


MEASURES = {
    "effective": Measure("effective_cost", "Effective cost (amortised)"),
    "billed": Measure("billed_cost", "Billed cost (cash)"),
    "list": Measure("list_cost", "List cost"),
    "contracted": Measure("contracted_cost", "Contracted cost"),
}
MEASURE_BY_FIELD = {measure.field: name for name, measure in MEASURES.items()}
GRAINS = {"day": "Day", "month": "Month"}


def link_value(value: Any) -> str:
    """How a filter value reads in a URL: a team or project by slug, other rows by
    id, yes or no, text as it is, NONE for nothing."""
    if value is None or value == "":
        return NONE
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Team | Project):
        return value.slug
    if isinstance(value, Model):
        return str(value.pk)
    return str(value)


def default_grain(start: date, end: date) -> str:
    return "day" if (end - start).days < DEFAULT_DAILY_DAYS else "month"


def range_error(start: date, end: date, grain: str | None) -> str | None:
    """Why a date range cannot be explored, or None."""
    if end < start:
        return "The range ends before it starts."
    if end >= start + relativedelta(months=MAX_MONTHS):
        return (
            f"A range covers at most {MAX_MONTHS} months; this one covers "
            f"{(end - start).days + 1} days. Narrow it, or explore it in parts."
        )
    if grain == "day" and (end - start).days >= MAX_DAILY_DAYS:
        return (
            f"Daily bars cover at most {MAX_DAILY_DAYS} days: choose month, "
            "or a shorter range."
        )
    return None


@dataclass(frozen=True)
class ExplorerQuery:
    """One question to the explorer. `end` is inclusive: the last day counted.

    Filter values are what the query sets: a Team, Project, TrainingRun or
    BillingSource (None for unallocated or no run), text ("" for none), or a boolean
    (provisional). Tag filters are (key, value), value None for "without the tag".
    """

    start: date
    end: date
    measure: str = "effective"
    group_by: str = "service"
    grain: str = "day"
    filters: tuple[tuple[str, Any], ...] = ()
    tags: tuple[tuple[str, str | None], ...] = ()

    @property
    def measure_field(self) -> str:
        return MEASURES[self.measure].field

    @property
    def tag_key(self) -> str | None:
        """The tag key grouped by, or None when grouping by a dimension."""
        if self.group_by.startswith(TAG_PREFIX):
            return self.group_by.removeprefix(TAG_PREFIX)
        return None

    @property
    def dimension(self) -> Dimension | None:
        return DIMENSIONS.get(self.group_by)

    @property
    def group_label(self) -> str:
        if self.tag_key is not None:
            return f"Tag “{self.tag_key}”"
        return DIMENSIONS[self.group_by].label

    @property
    def reads_records(self) -> bool:
        """Whether the rollup cannot answer: a dimension only the records have."""
        names = [name for name, _ in self.filters]
        if self.dimension is not None:
            names.append(self.dimension.name)
        return (
            bool(self.tags)
            or self.tag_key is not None
            or any(DIMENSIONS[name].rollup is None for name in names)
        )

    def params(self, **changes: Any) -> list[tuple[str, str]]:
        """The query string of this question, with filters changed: a dimension's
        name to a value (None removes the filter), `tag` to a (key, value) pair that
        replaces a filter on that key, or start, end, measure, group_by, grain.
        A grain that the range would give anyway is left out, so that it stays
        automatic when the range changes."""
        head = {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "group_by": self.group_by,
            "measure": self.measure,
        }
        if self.grain != default_grain(self.start, self.end):
            head["grain"] = self.grain
        filters = {name: link_value(value) for name, value in self.filters}
        tags = dict(self.tags)
        for name, value in changes.items():
            if name == "tag":
                key, tag_value = value
                tags[key] = tag_value
            elif name == "untag":
                tags.pop(value, None)
            elif name in DIMENSIONS:
                filters.pop(name, None)
                if value is not None:
                    filters[name] = (
                        value if isinstance(value, str) else link_value(value)
                    )
            else:
                head[name] = value.isoformat() if isinstance(value, date) else value
        pairs = list(head.items())
        pairs += [(name, filters[name]) for name in DIMENSIONS if name in filters]
        pairs += [
            ("tag", f"{key}={NONE if v is None else v}") for key, v in tags.items()
        ]
        return pairs

    def url(self, *, records: bool = False, **changes: Any) -> str:
        name = "cost_records" if records else "cost_explorer"
        return f"{reverse(name)}?{urlencode(self.params(**changes))}"

    def describe_filters(self) -> list[tuple[str, str, str]]:
        """(label, value shown, URL without this filter) for every filter set."""
        shown = []
        for name, value in self.filters:
            dimension = DIMENSIONS[name]
            text = _value_label(dimension, value)
            without: dict[str, Any] = {name: None}
            shown.append((dimension.label, text, self.url(**without)))
        for key, value in self.tags:
            text = f"{key} = {value}" if value is not None else f"no {key} tag"
            shown.append(("Tag", text, self.url(untag=key)))
        return shown


def _value_label(dimension: Dimension, value: Any) -> str:
    if value is None or value == "":
        return dimension.none_label
    if dimension.boolean:
        return "provisional" if value else "final"
    if isinstance(value, TrainingRun):
        return f"{value.project} · {value.name}"
    return str(value)


def explorer_url(
    *,
    records: bool = False,
    month: date | str | None = None,
    start: date | str | None = None,
    end: date | str | None = None,
    **filters: Any,
) -> str:
    """A link into the cost explorer (or, with records=True, to its cost records)
    that shows the figure the given filters produce.

    month: a date in the month, or "YYYY-MM": the whole calendar month.
    start, end: dates, both inclusive (the explorer's default: this month to date).
    Filters, by dimension name: team, project, run, source (a model instance, or its
    slug or id), provider, service, service_category, charge_category, region,
    sub_account, resource (text), provisional (True or False), tag ("key=value", a
    (key, value) pair, or a dict of them). NONE ("(none)") asks for nothing there:
    project=NONE is unallocated spend, service=NONE costs without a service.
    measure: effective (default), billed, list or contracted, or a budget's
    cost_measure ("effective_cost"). group_by: a dimension, or "tag:<key>".
    grain: day or month. A value of None or "" is left out, so that a missing
    template variable never asks for "(none)".
    """
    pairs: list[tuple[str, str]] = []
    if month:
        first = _month_of(month)
        pairs += [("start", first.isoformat())]
        pairs += [("end", (next_month(first) - timedelta(days=1)).isoformat())]
    for name, day in (("start", start), ("end", end)):
        if day:
            pairs.append((name, day if isinstance(day, str) else day.isoformat()))
    for name, value in filters.items():
        if value is None or value == "":
            continue  # a missing template variable never turns into "(none)"
        if name == "tag":
            pairs += [("tag", tag) for tag in _tag_texts(value)]
        elif name == "measure":
            pairs.append((name, MEASURE_BY_FIELD.get(value, value)))
        elif name in DIMENSIONS or name in ("group_by", "grain"):
            pairs.append((name, link_value(value)))
        else:
            raise TypeError(f"explorer_url() has no filter {name!r}")
    page = "cost_records" if records else "cost_explorer"
    return f"{reverse(page)}?{urlencode(pairs)}" if pairs else reverse(page)


def _month_of(month: date | str) -> date:
    if isinstance(month, str):
        year, number = month.split("-")[:2]
        return date(int(year), int(number), 1)
    return month_start(month)


def _tag_texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    pairs = value.items() if isinstance(value, Mapping) else [value]
    return [f"{key}={NONE if tag is None else tag}" for key, tag in pairs]


@dataclass
class GroupRow:
    """One group of the table: its converted amount and the records behind it."""

    key: Any  # the value grouped on: a row of a model, text, a boolean, or None
    label: str
    amount: Decimal = ZERO
    cost_lines: int = 0
    share: Decimal | None = None  # percent of the total
    filter_value: str = NONE  # how the group's filter reads in a URL


@dataclass
class UnconvertedRow:
    """Spend of a group in a currency without an FX rate: in that currency."""

    key: Any
    label: str
    currency: str
    amount: Decimal
    cost_lines: int
    filter_value: str = NONE


@dataclass
class Exploration:
    query: ExplorerQuery
    currency: str  # the reporting currency of every converted amount
    rows: list[GroupRow]
    unconverted: list[UnconvertedRow]
    total: Decimal
    cost_lines: int
    buckets: list[date]  # the chart's days or months, every one of the range
    series: list[tuple[str, list[Decimal]]]  # the largest groups, then "Other"


@dataclass
class _Cell:
    """An amount of one group, chart bucket and currency ("" once converted)."""

    group: Any
    bucket: date
    currency: str
    amount: Decimal
    cost_lines: int
    name: str = ""


def _moments(query: ExplorerQuery) -> tuple[datetime, datetime]:
    """The half-open span of the range: the first moment, and the one after it."""
    start_at = datetime.combine(query.start, time.min, tzinfo=UTC)
    end_at = datetime.combine(query.end + timedelta(days=1), time.min, tzinfo=UTC)
    return start_at, end_at


def _filtered(rows: QuerySet, query: ExplorerQuery, *, on_rollup: bool) -> QuerySet:
    for name, value in query.filters:
        dimension = DIMENSIONS[name]
        path = dimension.rollup if on_rollup else dimension.record
        assert path is not None, f"the rollup cannot filter by {name}"
        if dimension.model is not None and value is None:
            rows = rows.filter(**{f"{path}__isnull": True})
        elif dimension.model is not None:
            rows = rows.filter(**{path: value.pk})
        else:
            rows = rows.filter(**{path: value})
    for number, (key, value) in enumerate(query.tags):
        alias = f"tag_filter_{number}"
        rows = rows.alias(**{alias: KeyTextTransform(key, "tags")})
        if value is None:
            rows = rows.filter(**{f"{alias}__isnull": True})
        else:
            rows = rows.filter(**{alias: value})
    return rows


def _group_expression(query: ExplorerQuery, *, on_rollup: bool) -> Combinable:
    if query.tag_key is not None:
        return KeyTextTransform(query.tag_key, "tags")
    dimension = DIMENSIONS[query.group_by]
    path = dimension.rollup if on_rollup else dimension.record
    assert path is not None
    return F(path)


def records_in_range(user: User, query: ExplorerQuery) -> QuerySet[CostRecord]:
    """The cost records behind a question's figures, in its filters and the user's
    scope: charges starting in the range, and longer ones spread into it."""
    start_at, end_at = _moments(query)
    starts_inside = Q(charge_period_start__gte=start_at, charge_period_start__lt=end_at)
    spread_into = ~counted_on_first_day() & Q(
        charge_period_start__gte=start_at - LONGEST_SPREAD,
        charge_period_start__lt=start_at,
        charge_period_end__gt=start_at,
    )
    records = CostRecord.objects.filter(starts_inside | spread_into)
    records = _filtered(records, query, on_rollup=False)
    return visible_to(user, records, team="project__team")


def daily_costs_in_range(user: User, query: ExplorerQuery) -> QuerySet[DailyCost]:
    """The rollup's rows of a question that the rollup answers (`reads_records`
    false), in the user's scope."""
    rows = DailyCost.objects.filter(date__gte=query.start, date__lte=query.end)
    return visible_to(
        user, _filtered(rows, query, on_rollup=True), team="project__team"
    )


def _rollup_cells(user: User, query: ExplorerQuery) -> Iterator[_Cell]:
    rows = daily_costs_in_range(user, query)
    bucket = F("date") if query.grain == "day" else TruncMonth("date")
    unconverted = Case(
        When(fx_rate__isnull=True, then=F("billing_currency")), default=Value("")
    )
    grouped = (
        rows.annotate(
            group=_group_expression(query, on_rollup=True),
            bucket=bucket,
            currency=unconverted,
        )
        .values("group", "bucket", "currency")
        .annotate(amount=Sum(query.measure_field), lines=Sum("cost_lines"))
        .order_by()
    )
    for row in grouped:
        yield _Cell(
            row["group"], row["bucket"], row["currency"], row["amount"], row["lines"]
        )


def _record_cells(user: User, query: ExplorerQuery) -> Iterator[_Cell]:
    """The records' cells, converted: the day-or-less charges summed in SQL by
    group, bucket, currency and (for foreign currencies) day; the longer charges,
    a few, spread over their days here as the rollup spreads them."""
    start_at, end_at = _moments(query)
    reporting = settings.REPORTING_CURRENCY
    dimension = query.dimension
    name_field = dimension.name_field if dimension else None
    records = records_in_range(user, query).annotate(
        group=_group_expression(query, on_rollup=False)
    )
    day = TruncDate("charge_period_start", tzinfo=UTC)
    rate_day = Case(
        When(billing_currency=reporting, then=Value(None, output_field=DateField())),
        default=day,
    )
    short = (
        records.filter(
            counted_on_first_day(),
            charge_period_start__gte=start_at,
            charge_period_start__lt=end_at,
        )
        .annotate(
            bucket=day
            if query.grain == "day"
            else TruncMonth("charge_period_start", tzinfo=UTC),
            rate_day=rate_day,
        )
        .values("group", "bucket", "billing_currency", "rate_day")
        .annotate(
            amount=Sum(query.measure_field),
            lines=Count("pk"),
            **({"name": Max(name_field)} if name_field else {}),
        )
        .order_by()
    )
    fx = _LazyFx()
    for row in short:
        bucket = row["bucket"]
        bucket = bucket.date() if isinstance(bucket, datetime) else bucket
        yield fx.convert(
            _Cell(
                row["group"],
                bucket,
                row["billing_currency"],
                row["amount"],
                row["lines"],
                str(row.get("name") or ""),
            ),
            row["rate_day"] or bucket,
        )
    longer = records.exclude(counted_on_first_day()).filter(
        charge_period_start__lt=end_at, charge_period_end__gt=start_at
    )
    fields = ["group", "charge_period_start", "charge_period_end", "billing_currency"]
    fields += [query.measure_field, *([name_field] if name_field else [])]
    for record in longer.values(*fields).iterator():
        yield from _spread_cells(query, record, fx, name_field)


def _spread_cells(
    query: ExplorerQuery, record: dict, fx: "_LazyFx", name_field: str | None
) -> Iterator[_Cell]:
    begins = record["charge_period_start"]
    first_day = begins.astimezone(UTC).date()
    amounts = {query.measure_field: record[query.measure_field]}
    for day, share in day_shares(begins, record["charge_period_end"], amounts):
        if not query.start <= day <= query.end:
            continue
        cell = _Cell(
            record["group"],
            day if query.grain == "day" else month_start(day),
            record["billing_currency"],
            share[query.measure_field],
            1 if day == first_day else 0,
            record[name_field] if name_field else "",
        )
        yield fx.convert(cell, day)


class _LazyFx:
    """The FX table, read only when a foreign currency turns up."""

    def __init__(self) -> None:
        self.reporting = settings.REPORTING_CURRENCY
        self.table: FxTable | None = None

    def convert(self, cell: _Cell, day: date) -> _Cell:
        if cell.currency == self.reporting:
            cell.currency = ""
            return cell
        if self.table is None:
            self.table = FxTable()
        rate = self.table.rate(cell.currency, day)
        if rate is not None:
            cell.amount *= rate
            cell.currency = ""
        return cell


# PostgreSQL's default 4 MB sorts a quarter of a large rollup on disk to group it by
# service (a text column: a collated sort); with room to hash the groups in memory,
# the query takes half the time (420 ms to 220 ms over 500,000 rollup rows).
EXPLORER_WORK_MEM = "64MB"


def explore(*, user: User, query: ExplorerQuery) -> Exploration:
    """The answer to one question, for one user: their teams' spend, and all of it
    (unallocated included) for finance and admins."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(f"SET LOCAL work_mem = '{EXPLORER_WORK_MEM}'")
        return _explore(user, query)


def _explore(user: User, query: ExplorerQuery) -> Exploration:
    cells = (
        _record_cells(user, query)
        if query.reads_records
        else _rollup_cells(user, query)
    )
    converted: dict[Any, GroupRow] = {}
    apart: dict[tuple[Any, str], UnconvertedRow] = {}
    by_bucket: dict[tuple[Any, date], Decimal] = defaultdict(lambda: ZERO)
    names: dict[Any, str] = {}
    for cell in cells:
        names[cell.group] = max(names.get(cell.group, ""), cell.name)
        row: GroupRow | UnconvertedRow
        if cell.currency:
            row = apart.setdefault(
                (cell.group, cell.currency),
                UnconvertedRow(cell.group, "", cell.currency, ZERO, 0),
            )
        else:
            row = converted.setdefault(cell.group, GroupRow(cell.group, ""))
            by_bucket[cell.group, cell.bucket] += cell.amount
        row.amount += cell.amount
        row.cost_lines += cell.cost_lines
    labels = _labels(query, {*converted, *(group for group, _ in apart)}, names)
    every_row: list[GroupRow | UnconvertedRow] = [*converted.values(), *apart.values()]
    for labelled in every_row:
        labelled.label, labelled.filter_value = labels[labelled.key]
    rows = sorted(converted.values(), key=lambda r: (-r.amount, r.label))
    total = sum((group.amount for group in rows), ZERO)
    for group in rows:
        group.share = group.amount / total * 100 if total else None
    buckets = _buckets(query)
    return Exploration(
        query=query,
        currency=settings.REPORTING_CURRENCY,
        rows=rows,
        unconverted=sorted(apart.values(), key=lambda r: (r.currency, -r.amount)),
        total=total,
        cost_lines=sum(group.cost_lines for group in rows),
        buckets=buckets,
        series=_series(rows, by_bucket, buckets),
    )


def _buckets(query: ExplorerQuery) -> list[date]:
    if query.grain == "day":
        days = (query.end - query.start).days + 1
        return [query.start + timedelta(days=n) for n in range(days)]
    months = [month_start(query.start)]
    while next_month(months[-1]) <= query.end:
        months.append(next_month(months[-1]))
    return months


def _series(
    rows: list[GroupRow],
    by_bucket: Mapping[tuple[Any, date], Decimal],
    buckets: list[date],
) -> list[tuple[str, list[Decimal]]]:
    # "Other" stands for two groups or more; a single one is drawn as itself.
    shown = CHART_GROUPS if len(rows) > CHART_GROUPS + 1 else CHART_GROUPS + 1
    series = [
        (row.label, [by_bucket.get((row.key, bucket), ZERO) for bucket in buckets])
        for row in rows[:shown]
    ]
    rest = rows[shown:]
    if rest:
        other = [
            sum((by_bucket.get((row.key, bucket), ZERO) for row in rest), ZERO)
            for bucket in buckets
        ]
        series.append((f"Other ({len(rest)} groups)", other))
    return series


def _labels(
    query: ExplorerQuery, keys: Iterable[Any], names: Mapping[Any, str]
) -> dict[Any, tuple[str, str]]:
    """Each group's label and filter value, from one query for rows of a model."""
    keys = list(keys)
    if query.tag_key is not None:
        missing = f"(no {query.tag_key} tag)"
        return {key: (missing, NONE) if key is None else (key, key) for key in keys}
    dimension = DIMENSIONS[query.group_by]
    if dimension.model is not None:
        return _model_labels(dimension, keys)
    labels: dict[Any, tuple[str, str]] = {}
    for key in keys:
        if dimension.boolean:
            labels[key] = ("Provisional" if key else "Final", link_value(key))
        elif key in (None, ""):
            labels[key] = (dimension.none_label, NONE)
        else:
            name = names.get(key, "")
            shown = f"{name} ({key})" if name and name != key else str(key)
            labels[key] = (shown, str(key))
    return labels


def _model_labels(dimension: Dimension, keys: list[Any]) -> dict[Any, tuple[str, str]]:
    assert dimension.model is not None
    rows = dimension.model._default_manager.all()
    if dimension.model is TrainingRun:
        rows = rows.select_related("project")
    found = rows.in_bulk([key for key in keys if key is not None])
    labels: dict[Any, tuple[str, str]] = {}
    for key in keys:
        if key is None:
            labels[key] = (dimension.none_label, NONE)
        elif key in found:
            row = found[key]
            labels[key] = (_value_label(dimension, row), link_value(row))
        else:
            labels[key] = (f"#{key} (deleted)", str(key))
    return labels


def first_spend_by_team() -> dict[int, date]:
    """The first day of each team's spend in the rollup, for links to its spend "to
    date": one query, an index probe per project (daily_project_date)."""
    first = (
        DailyCost.objects.filter(project=OuterRef("pk"))
        .order_by("date")
        .values("date")[:1]
    )
    firsts: dict[int, date] = {}
    rows = Project.objects.annotate(first=Subquery(first)).values_list("team", "first")
    for team, day in rows:
        if day is not None:
            firsts[team] = min(day, firsts.get(team, day))
    return firsts


def spend_span(**scope: Any) -> tuple[date, date] | None:
    """The first and last day of a scope's spend in the rollup (project=...), for
    links to figures without dates: two index probes (daily_project_date)."""
    span = DailyCost.objects.filter(**scope).aggregate(
        first=Min("date"), last=Max("date")
    )
    return (span["first"], span["last"]) if span["first"] else None
