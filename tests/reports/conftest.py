"""Fixtures shared by the report tests: the February of test_monthly_report.py."""

from tests.reports.test_monthly_report import february  # noqa: F401 (a fixture)
