"""Display helpers: money, percents and statuses. Rounding happens only here."""

from decimal import Decimal

from django import template
from django.conf import settings
from django.utils.html import format_html

from billing.explorer import explorer_url
from budgets.selectors import months_no_budget_covers as uncovered_months
from budgets.services import Status
from core.currencies import ZERO
from core.currencies import money as format_money
from core.exports import spreadsheet_safe as safe_cell
from spendtracker.setup import setup_steps

register = template.Library()

STATUS_LABELS = dict(Status.choices) | {"no_budget": "No budget"}


@register.filter
def money(amount, currency: str = "") -> str:
    if amount is None or amount == "":
        return "—"
    return format_money(Decimal(amount), currency or settings.REPORTING_CURRENCY)


@register.filter
def money_cents(amount, currency: str = "") -> str:
    if amount is None or amount == "":
        return "—"
    return format_money(
        Decimal(amount), currency or settings.REPORTING_CURRENCY, places=2
    )


@register.filter
def exact(amount, currency: str = "") -> str:
    """An amount to its last decimal, never rounded (a reconciliation's difference,
    which is news however small), with its currency."""
    if amount is None or amount == "":
        return "—"
    text = f"{Decimal(amount).normalize():f}"
    return f"{text} {currency or settings.REPORTING_CURRENCY}"


@register.filter
def percent(value) -> str:
    if value is None:
        return "—"
    return f"{Decimal(value):.0f}%"


@register.filter
def signed_percent(value) -> str:
    if value is None:
        return "—"
    rounded = Decimal(value).quantize(Decimal(1))
    return f"+{rounded}%" if rounded > 0 else f"{rounded}%".replace("-", "−")


@register.filter
def capped(value, limit: int = 100) -> Decimal:
    """A percent clipped to [0, limit], for the width of a meter."""
    if value is None:
        return ZERO
    return max(ZERO, min(Decimal(value), Decimal(limit)))


@register.filter
def spreadsheet_safe(text):
    """A name as every export writes it: one a spreadsheet would run as a formula
    starts with a `'` (core.exports), so the page, its PDF and its CSV agree."""
    return safe_cell(text)


@register.filter
def seconds(duration) -> str:
    """A timedelta as a person reads it: 0.1 s, 42 s, 3 min 5 s."""
    if duration is None:
        return "—"
    total = duration.total_seconds()
    if total < 60:
        return f"{total:.1f} s"
    minutes, secs = divmod(round(total), 60)
    return f"{minutes} min {secs} s"


@register.simple_tag
def status_badge(status: str) -> str:
    label = STATUS_LABELS.get(status, status)
    return format_html('<span class="badge badge-{}">{}</span>', status, label)


@register.simple_tag
def explore_url(**filters) -> str:
    """The cost explorer showing the figure these filters produce; records=True for
    the cost records behind it: {% explore_url project=project month=month %}.
    The filters are those of billing.explorer.explorer_url."""
    return explorer_url(**filters)


@register.simple_tag
def months_no_budget_covers(months) -> list:
    """Those of the months no budget covers, for a page of an earlier app (billing)
    that may not ask budgets itself: {% months_no_budget_covers months as bare %}."""
    return uncovered_months(months)


# A printed report (the PDF) is laid out box by box, hundreds of rows of them: what
# only a screen needs, a link or a note's own small type, is plain text there. Its
# template sets `printed`.


@register.simple_tag(takes_context=True)
def note(context, text) -> str:
    """A figure's note in muted small type beside it; plain text when printed."""
    if context.get("printed"):
        return text
    return format_html('<span class="muted small">{}</span>', text)


@register.simple_tag(takes_context=True)
def linked(context, url: str, text) -> str:
    """`text` linking to `url`; plain text when printed."""
    if context.get("printed"):
        return text
    return format_html('<a href="{}">{}</a>', url, text)


@register.inclusion_tag("_next_steps.html", takes_context=True)
def next_steps(context) -> dict:
    """On an empty page of an install not set up yet: what to do next."""
    return {"steps": setup_steps(context["request"].user)}
