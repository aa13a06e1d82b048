from datetime import date, timedelta

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Max, Min

from billing.models import CostRecord
from billing.services import daily_costs_rebuild


class Command(BaseCommand):
    help = (
        "Rebuild the DailyCost rollup from the cost records: all of it, or the charge "
        "dates from --start to --end (inclusive). Run it after an upgrade that empties "
        "the rollup, or after adding FX rates for past days."
    )

    def add_arguments(self, parser):
        parser.add_argument("--start", type=date.fromisoformat, help="YYYY-MM-DD")
        parser.add_argument("--end", type=date.fromisoformat, help="YYYY-MM-DD")

    def handle(self, *args, **options):
        span = CostRecord.objects.aggregate(
            first=Min("charge_period_start"), last=Max("charge_period_start")
        )
        if span["first"] is None:
            self.stdout.write("No cost records: nothing to roll up.")
            return
        start = options["start"] or span["first"].date()
        end = options["end"] or span["last"].date()
        if end < start:
            raise CommandError(f"--end {end} is before --start {start}")
        rows = daily_costs_rebuild(start=start, end=end + timedelta(days=1))
        self.stdout.write(f"Rolled up {start} to {end}: {rows} daily rows.")
