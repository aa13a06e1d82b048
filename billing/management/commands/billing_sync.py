import json

from django.core.management.base import BaseCommand, CommandError

from billing.importers import ImportFailure
from billing.importers.base import ProviderError
from billing.models import BillingSource, ImportRun
from billing.services import billing_sync_source
from billing.sync import sources_to_sync


class Command(BaseCommand):
    help = (
        "Fetch the open and previous billing periods of every enabled source that "
        "Spendtracker reads itself (provider APIs, buckets), or of one source."
    )

    def add_arguments(self, parser):
        parser.add_argument("--source", help="only this source (by name)")
        parser.add_argument(
            "--json", action="store_true", help="print one JSON object on stdout"
        )

    def handle(self, *args, **options):
        sources = sources_to_sync()
        if options["source"]:
            sources = BillingSource.objects.filter(name=options["source"])
            if not sources:
                raise CommandError(f"No billing source is named {options['source']!r}.")
        results: list[dict] = []
        failed = False
        for source in sources:
            result = self._sync(source)
            failed |= result["status"] == ImportRun.Status.FAILED
            results.append(result)
            if not options["json"]:
                self.stdout.write(self._line(result))
        if options["json"]:
            self.stdout.write(json.dumps({"sources": results}))
        if failed:
            errors = [r["error"] for r in results if r["status"] == "failed"]
            raise CommandError("; ".join(errors), returncode=1)

    @staticmethod
    def _sync(source: BillingSource) -> dict:
        try:
            return billing_sync_source(source_id=source.pk).as_json()
        except (ImportFailure, ProviderError) as error:
            return {"status": "failed", "source": source.name, "error": str(error)}

    @staticmethod
    def _line(result: dict) -> str:
        if result["status"] == "failed":
            return f"{result['source']}: failed: {result['error']}"
        if result["status"] == "unchanged":
            return f"{result['source']}: unchanged"
        periods = ", ".join(result["billing_periods"])
        lines = [f"{result['source']}: {result['rows']:,} rows for {periods}"]
        lines += [f"{result['source']}: warning: {w}" for w in result["warnings"]]
        return "\n".join(lines)
