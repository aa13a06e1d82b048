"""Charts of the monthly report as inline SVG, drawn on the server: the same markup
serves the page, the PDF (WeasyPrint runs no JavaScript) and an email."""

from dataclasses import dataclass
from decimal import Decimal

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from core.currencies import ZERO, money
from core.exports import spreadsheet_safe
from reports.services import MonthlyReport

PLAN_COLOUR = "#9aa9ff"
ACTUAL_COLOUR = "#3355ff"
OVER_COLOUR = "#c0263b"
INK = "#5f6b85"
GRID = "#e3e7ef"
WIDTH, HEIGHT = 720, 260
LEFT, RIGHT, TOP, BOTTOM = 70, 24, 16, 46


@dataclass(frozen=True)
class Pair:
    label: str
    plan: Decimal
    actual: Decimal


def _scale(pairs: list[Pair]) -> Decimal:
    top = max((max(p.plan, p.actual) for p in pairs), default=ZERO)
    return top if top > 0 else Decimal(1)


def _axis(top: Decimal, currency: str) -> list[str]:
    parts = []
    plot_height = HEIGHT - TOP - BOTTOM
    for step in range(5):
        value = top * step / 4
        y = TOP + plot_height - plot_height * step / 4
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="{GRID}"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" '
            f'fill="{INK}">{escape(money(value, currency))}</text>'
        )
    return parts


def _legend() -> str:
    y = HEIGHT - 10
    return (
        f'<rect x="{LEFT}" y="{y - 9}" width="10" height="10" fill="{PLAN_COLOUR}"/>'
        f'<text x="{LEFT + 14}" y="{y}" font-size="11" fill="{INK}">Plan</text>'
        f'<rect x="{LEFT + 60}" y="{y - 9}" width="10" height="10" '
        f'fill="{ACTUAL_COLOUR}"/>'
        f'<text x="{LEFT + 74}" y="{y}" font-size="11" fill="{INK}">Actual</text>'
    )


def _svg(title: str, parts: list[str]) -> SafeString:
    body = "".join(parts)
    # Safe: every text placed in it was escaped above.
    return mark_safe(
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-label="{escape(title)}" class="report-chart" '
        f'font-family="DejaVu Sans, Arial, sans-serif">'
        f"<title>{escape(title)}</title>{body}</svg>"
    )


def plan_actual_bars(title: str, pairs: list[Pair], currency: str) -> SafeString:
    """Plan and actual side by side for each label; actual above plan in red."""
    top = _scale(pairs)
    plot_height = HEIGHT - TOP - BOTTOM
    slot = (WIDTH - LEFT - RIGHT) / max(len(pairs), 1)
    bar = min(slot * 0.35, 40)
    parts = _axis(top, currency)
    for index, pair in enumerate(pairs):
        x = LEFT + slot * index + slot / 2
        for offset, value, colour in (
            (-bar, pair.plan, PLAN_COLOUR),
            (0, pair.actual, OVER_COLOUR if pair.actual > pair.plan else ACTUAL_COLOUR),
        ):
            height = float(max(value, ZERO) / top) * plot_height
            parts.append(
                f'<rect x="{x + offset:.1f}" y="{TOP + plot_height - height:.1f}" '
                f'width="{bar:.1f}" height="{height:.1f}" fill="{colour}">'
                f"<title>{escape(pair.label)}: {escape(money(value, currency))}"
                f"</title></rect>"
            )
        parts.append(
            f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" '
            f'font-size="11" fill="{INK}">{escape(pair.label[:18])}</text>'
        )
    parts.append(_legend())
    return _svg(title, parts)


def trend_lines(title: str, pairs: list[Pair], currency: str) -> SafeString:
    """Plan (dashed) and actual over months."""
    top = _scale(pairs)
    plot_height = HEIGHT - TOP - BOTTOM
    step = (WIDTH - LEFT - RIGHT) / max(len(pairs) - 1, 1)
    parts = _axis(top, currency)

    def points(values: list[Decimal]) -> str:
        return " ".join(
            f"{LEFT + step * i:.1f},"
            f"{TOP + plot_height - float(max(v, ZERO) / top) * plot_height:.1f}"
            for i, v in enumerate(values)
        )

    parts.append(
        f'<polyline fill="none" stroke="{PLAN_COLOUR}" stroke-width="2" '
        f'stroke-dasharray="6 4" points="{points([p.plan for p in pairs])}"/>'
        f'<polyline fill="none" stroke="{ACTUAL_COLOUR}" stroke-width="3" '
        f'points="{points([p.actual for p in pairs])}"/>'
    )
    for index, pair in enumerate(pairs):
        parts.append(
            f'<text x="{LEFT + step * index:.1f}" y="{HEIGHT - BOTTOM + 16}" '
            f'text-anchor="middle" font-size="11" fill="{INK}">'
            f"{escape(pair.label)}</text>"
        )
    parts.append(_legend())
    return _svg(title, parts)


def report_charts(report: MonthlyReport) -> dict[str, SafeString]:
    """The two charts of the monthly report, for its page and its PDF."""
    currency = report.currency
    return {
        "team_chart": plan_actual_bars(
            "Plan vs actual by team",
            [
                Pair(spreadsheet_safe(t.team.name), t.plan, t.actual)
                for t in report.teams
            ],
            currency,
        ),
        "trend_chart": trend_lines(
            "Plan vs actual, last 12 months",
            [Pair(f"{m.month:%b %y}", m.plan, m.actual) for m in report.trend],
            currency,
        ),
    }
