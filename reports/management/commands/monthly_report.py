import re
from datetime import date
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from accounts.models import Team
from reports.closing import month_close_in_force, open_report, snapshot_file
from reports.exports import (
    render_csv,
    render_journal,
    render_json,
    render_pdf,
    render_xlsx,
)

RENDERERS = {
    "csv": render_csv,
    "xlsx": render_xlsx,
    "pdf": render_pdf,
    "json": render_json,
    "journal": render_journal,
}
TEXT_FORMATS = {"csv", "json", "journal"}  # what `--output -` may print


class Command(BaseCommand):
    help = (
        "Write the monthly report of the whole organisation as CSV, XLSX, PDF or "
        "JSON, or the month's chargeback journal (CSV); `--output -` prints CSV, "
        "JSON or the journal on stdout. A closed month's file is the one stored "
        "when it closed."
    )

    def add_arguments(self, parser):
        parser.add_argument("--month", required=True, help="the month, YYYY-MM")
        parser.add_argument("--format", required=True, choices=sorted(RENDERERS))
        parser.add_argument(
            "--output", required=True, help="the file to write, or - for stdout"
        )

    def handle(self, *args, **options):
        month = _month(options["month"])
        fmt, output = options["format"], options["output"]
        if output == "-" and fmt not in TEXT_FORMATS:
            raise CommandError(
                f"--format {fmt} is binary and cannot go to stdout: "
                "give a file name with --output"
            )
        content = _closed_file(month, fmt) or RENDERERS[fmt](
            open_report(month=month, teams=Team.objects.all(), whole_organisation=True)
        )
        if output == "-":
            self.stdout.write(content.decode(), ending="")
            return
        path = Path(output)
        try:
            path.write_bytes(content)
        except OSError as exc:
            raise CommandError(f"cannot write {path}: {exc.strerror}") from exc
        self.stdout.write(
            f"Wrote the {month:%B %Y} report ({fmt}, {len(content):,} bytes) to {path}."
        )


def _month(text: str) -> date:
    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}", text):
        raise CommandError(f"--month must be YYYY-MM, got {text!r}")
    year, month = (int(part) for part in text.split("-"))
    if not 1 <= month <= 12 or year < 1:
        raise CommandError(f"--month must be YYYY-MM, got {text!r}: no such month")
    first = date(year, month, 1)
    if first > timezone.now().date():
        raise CommandError(f"{text} has not begun: there is no report for it yet")
    return first


def _closed_file(month: date, fmt: str) -> bytes | None:
    """A closed month's file as it was stored when the month closed."""
    close = month_close_in_force(month=month)
    if close is None:
        return None
    stored = snapshot_file(close=close, fmt=fmt)
    if stored is None:
        raise CommandError(f"no {fmt} file was kept when {month:%B %Y} closed")
    return bytes(stored.content)
