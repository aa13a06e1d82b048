"""The figures behind an alert, as its emails show them: kept on the alert when it fires
(`Alert.figures`), so that an email sent late shows what fired it, and computed again
when the email goes, to add the latest.

Amounts and percents are exact decimal strings, never floats: the JSON is stored as is,
and the email's filters read the strings as decimals.
"""

from datetime import date
from decimal import Decimal
from typing import Any

from budgets.services import ProjectSummary, RunSummary, Variance

CHART_DAYS = 14


def project_figures(summary: ProjectSummary) -> dict[str, Any]:
    """A project's budget against its spend, and its daily spend for the chart."""
    if summary.budget is None or summary.variance is None:
        return {}
    return {
        "currency": summary.currency,
        **_variance_figures(summary.variance),
        "month_actual": str(summary.month_actual),
        "month_plan": str(summary.month_plan),
        "daily": [
            [day.isoformat(), str(amount)]
            for day, amount in summary.trend[-CHART_DAYS:]
        ],
    }


def run_figures(summary: RunSummary) -> dict[str, Any]:
    """A run's planned cost against its spend, and its GPU-hours if it plans them."""
    run = summary.run
    figures = {"currency": run.currency, **_variance_figures(summary.variance)}
    if run.planned_gpu_hours:
        figures["gpu_hours"] = str(summary.gpu_hours)
        figures["planned_gpu_hours"] = str(run.planned_gpu_hours)
    return figures


def _variance_figures(variance: Variance) -> dict[str, Any]:
    return {
        "total": str(variance.total),
        "actual_to_date": str(variance.actual_to_date),
        "used_percent": _text(variance.used_percent),
        "plan_to_date": str(variance.plan_to_date),
        "variance": str(variance.variance),
        "variance_percent": _text(variance.variance_percent),
        "forecast": str(variance.forecast),
        "status": str(variance.status),
    }


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def daily_spend(figures: dict[str, Any]) -> list[tuple[date, Decimal]]:
    """The chart's days and amounts, read back from the JSON."""
    return [
        (date.fromisoformat(day), Decimal(amount))
        for day, amount in figures.get("daily", [])
    ]
