"""Calendar months, in UTC like everything stored."""

from datetime import date, datetime, timedelta
from typing import TypeVar

Day = TypeVar("Day", date, datetime)


def month_start(day: Day) -> Day:
    """The first moment of the month: a date for a date, midnight for a datetime."""
    if isinstance(day, datetime):
        return day.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return day.replace(day=1)


def next_month(day: date) -> date:
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)
