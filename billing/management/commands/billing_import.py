import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from billing.importers import IMPORTERS
from billing.models import ImportRun
from billing.services import billing_import_file

# Formats a file can be imported in; gcp, openai and anthropic are fetched by
# billing_sync instead.
FORMATS = ["auto", *IMPORTERS]


class Command(BaseCommand):
    help = (
        "Import a billing export for a source, replacing the source's rows for each "
        "billing period in the file. Importing the same file again changes nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path, help="the export file (CSV or CSV.gz)")
        parser.add_argument(
            "--source", required=True, help="billing source name; created if new"
        )
        parser.add_argument("--format", choices=FORMATS, default="auto")
        parser.add_argument(
            "--json", action="store_true", help="print one JSON object on stdout"
        )

    def handle(self, *args, **options):
        path: Path = options["file"]
        if not path.is_file():
            self._refuse(options, f"{path}: no such file")
        outcome = billing_import_file(
            path=path, source_name=options["source"], file_format=options["format"]
        )
        run = outcome.run
        if options["json"]:
            self.stdout.write(json.dumps(outcome.as_json()))
        elif run.status != ImportRun.Status.FAILED:
            self.stdout.write(self._summary(outcome.as_json()))
        if run.status == ImportRun.Status.FAILED:
            raise CommandError(run.error, returncode=1)

    def _refuse(self, options, error: str) -> None:
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "status": "failed",
                        "source": options["source"],
                        "rows": 0,
                        "billing_periods": [],
                        "billed": {},
                        "effective": {},
                        "unallocated": {},
                        "error": error,
                    }
                )
            )
        raise CommandError(error, returncode=1)

    @staticmethod
    def _summary(result: dict) -> str:
        if result["status"] == "unchanged":
            return f"Unchanged: this file is already imported for {result['source']}."
        periods = ", ".join(result["billing_periods"])
        billed = ", ".join(
            f"{amount} {cur}" for cur, amount in result["billed"].items()
        )
        return (
            f"Imported {result['rows']:,} rows into {result['source']} "
            f"for {periods}: billed {billed}."
        )
