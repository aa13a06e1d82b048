import json
from argparse import ArgumentTypeError
from datetime import date, datetime
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from billing.importers import IMPORTERS
from billing.models import ImportRun
from billing.services import ImportOutcome, billing_import_files
from core.currencies import ISO_4217_CODES

# Formats a file can be imported in.
FORMATS = ["auto", *IMPORTERS]


def billing_month(text: str) -> date:
    try:
        return datetime.strptime(text, "%Y-%m").date()  # noqa: DTZ007 (a month)
    except ValueError:
        raise ArgumentTypeError(f"{text!r} is not a month written YYYY-MM") from None


def currency_code(text: str) -> str:
    code = text.strip().upper()
    if code not in ISO_4217_CODES:
        raise ArgumentTypeError(f"{text!r} is not an ISO 4217 currency code")
    return code


class Command(BaseCommand):
    help = (
        "Import a delivery of billing exports (one or more files, a folder or a zip) "
        "for a source, in one transaction, replacing the source's rows for each "
        "billing period in it. Importing the same delivery again changes nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "files",
            nargs="+",
            type=Path,
            metavar="FILE",
            help="the export files of one delivery (CSV, CSV.gz, Parquet, JSON), "
            "folders of them, or zips of them",
        )
        parser.add_argument(
            "--source", required=True, help="billing source name; created if new"
        )
        parser.add_argument("--format", choices=FORMATS, default="auto")
        parser.add_argument(
            "--period",
            type=billing_month,
            metavar="YYYY-MM",
            help="a billing period the delivery restates even without rows in it: "
            "an export with a header and no rows empties it",
        )
        parser.add_argument(
            "--currency",
            type=currency_code,
            metavar="CUR",
            help="the ISO 4217 currency of files that name none",
        )
        parser.add_argument(
            "--allow-overlap",
            action="store_true",
            help="import even when another source holds the same files, or the same "
            "billing accounts and periods",
        )
        parser.add_argument(
            "--json", action="store_true", help="print one JSON object on stdout"
        )

    def handle(self, *args, **options):
        paths: list[Path] = options["files"]
        for path in paths:
            if not path.exists():
                self._refuse(options, f"{path}: no such file or folder")
        outcome = billing_import_files(
            paths=paths,
            source_name=options["source"],
            file_format=options["format"],
            period=options["period"],
            currency=options["currency"] or "",
            allow_overlap=options["allow_overlap"],
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
            refused = ImportRun(
                source_name=options["source"],
                status=ImportRun.Status.FAILED,
                error=error,
            )
            self.stdout.write(json.dumps(ImportOutcome(refused).as_json()))
        raise CommandError(error, returncode=1)

    @staticmethod
    def _summary(result: dict) -> str:
        if result["status"] == "unchanged":
            return (
                f"Unchanged: this delivery is already imported for {result['source']}."
            )
        periods = ", ".join(result["billing_periods"])
        billed = ", ".join(
            f"{amount} {cur}" for cur, amount in result["billed"].items()
        )
        replaced = result["replaced"]
        removed = ", ".join(
            f"{amount} {cur}" for cur, amount in replaced["billed"].items()
        )
        lines = [
            f"Imported {result['rows']:,} rows into {result['source']} "
            f"for {periods}: billed {billed or 'nothing'}; replaced "
            f"{replaced['rows']:,} rows (billed {removed or 'nothing'})."
        ]
        lines += [f"Warning: {warning}" for warning in result["warnings"]]
        return "\n".join(lines)
