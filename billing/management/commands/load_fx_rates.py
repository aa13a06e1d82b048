import json
from datetime import timedelta
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from billing.fx_rates import FxLoadOutcome, fx_rates_load_file


class Command(BaseCommand):
    help = (
        "Load FX rates into the reporting currency from the European Central Bank's "
        "historical file (eurofxref-hist.csv or .zip; cross rates for any reporting "
        "currency) or a CSV with the columns date,currency,rate; then rebuild the "
        "rollup for the days whose rate changed. Loading the same file again changes "
        "nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path, help="the rates file")
        parser.add_argument(
            "--json", action="store_true", help="print one JSON object on stdout"
        )

    def handle(self, *args, **options):
        path: Path = options["file"]
        if path.is_file():
            outcome = fx_rates_load_file(path=path)
        else:
            outcome = FxLoadOutcome(file_name=str(path), error=f"{path}: no such file")
        if options["json"]:
            self.stdout.write(json.dumps(outcome.as_json()))
        elif not outcome.error:
            self.stdout.write(self._summary(outcome))
        if outcome.error:
            raise CommandError(outcome.error, returncode=1)

    @staticmethod
    def _summary(outcome: FxLoadOutcome) -> str:
        if outcome.status == "unchanged":
            return (
                f"Unchanged: the {outcome.unchanged:,} rates of {outcome.file_name} "
                "are already loaded."
            )
        text = (
            f"Loaded {outcome.file_name} ({outcome.file_format}): "
            f"{outcome.created:,} new and {outcome.updated:,} restated rates for "
            f"{', '.join(outcome.currencies)}, {outcome.first_day} to "
            f"{outcome.last_day}."
        )
        if outcome.rebuilt:
            start, end = outcome.rebuilt
            last = end - timedelta(days=1)
            rows = outcome.rollup_rows
            text += f" Rollup rebuilt from {start} to {last}: {rows} rows."
        return "\n".join([text, *(f"Warning: {w}" for w in outcome.warnings)])
