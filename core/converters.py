"""URL converters shared by the apps' URL patterns."""

from datetime import date


class MonthConverter:
    """`2026-11` in a URL, the first day of that month in a view."""

    regex = r"[0-9]{4}-[0-9]{2}"

    def to_python(self, value: str) -> date:
        year, month = value.split("-")
        try:
            return date(int(year), int(month), 1)
        except ValueError as exc:
            raise ValueError(f"{value} is not a month") from exc

    def to_url(self, value: date) -> str:
        return f"{value:%Y-%m}"
