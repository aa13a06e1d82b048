import json

from django.core.management.base import BaseCommand

from budgets.alerts import alerts_evaluate
from budgets.notifications import notifications_send_pending


class Command(BaseCommand):
    help = (
        "Evaluate every alert rule now, then send the alert emails owed "
        "(daily digests go out on their own schedule)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--json", action="store_true", help="print one JSON object on stdout"
        )

    def handle(self, *args, **options):
        outcome = alerts_evaluate(send_later=False)
        outcome.emails = notifications_send_pending()
        if options["json"]:
            self.stdout.write(json.dumps(outcome.as_json()))
            return
        self.stdout.write(
            f"Evaluated {outcome.evaluated} rule readings: {outcome.fired} fired, "
            f"{outcome.escalated} escalated, {outcome.resolved} resolved; "
            f"{outcome.emails} email{'s' * (outcome.emails != 1)} sent."
        )
