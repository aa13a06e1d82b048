"""Files people open in a spreadsheet: CSV exports of the portal and the reports."""

import csv
from collections.abc import Iterable, Iterator
from typing import Any

from django.http import StreamingHttpResponse

# A cell starting with one of these is read as a formula by Excel, LibreOffice and
# Google Sheets (OWASP "CSV injection"); tab and carriage return hide the sign.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """A text cell a spreadsheet shows as text: one that would start a formula gets a
    leading single quote. Numbers (Decimal, int) and dates pass through unchanged, so
    a negative amount stays a number."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


class _Echo:
    """A file that hands back what is written to it, so rows stream as written."""

    def write(self, text: str) -> str:
        return text


def csv_response(
    filename: str, header: Iterable[Any], rows: Iterable[Iterable[Any]]
) -> StreamingHttpResponse:
    """A CSV download, streamed row by row, whose every text cell is
    spreadsheet-safe. Decimals are written exactly as they are."""
    writer = csv.writer(_Echo())

    def lines() -> Iterator[str]:
        yield writer.writerow([spreadsheet_safe(cell) for cell in header])
        for row in rows:
            yield writer.writerow([spreadsheet_safe(cell) for cell in row])

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
