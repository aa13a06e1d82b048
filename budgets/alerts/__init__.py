"""Alerts: rules that read every project, run and billing source (`rules`), the
lifecycle those readings drive (`lifecycle`), and who hears of them (`recipients`)."""

from budgets.alerts.lifecycle import ACTIVE, Outcome, alert_acknowledge, alerts_evaluate
from budgets.alerts.rules import (
    project_alert_rules,
    project_alert_rules_save,
    project_waiting_reason,
)

__all__ = [
    "ACTIVE",
    "Outcome",
    "alert_acknowledge",
    "alerts_evaluate",
    "project_alert_rules",
    "project_alert_rules_save",
    "project_waiting_reason",
]
