import json

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from budgets.alerts import Outcome, alerts_evaluate
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
        outcome = Outcome()
        try:
            outcome = alerts_evaluate(send_later=False)
            outcome.emails = notifications_send_pending()
        except DatabaseError as error:
            self._fail(options, outcome, error)
        if options["json"]:
            self.stdout.write(json.dumps(outcome.as_json()))
            return
        self.stdout.write(
            f"Evaluated {outcome.evaluated} rule readings: {outcome.fired} fired, "
            f"{outcome.escalated} escalated, {outcome.resolved} resolved; "
            f"{outcome.emails} email{'s' * (outcome.emails != 1)} sent."
        )

    def _fail(self, options, outcome: Outcome, error: DatabaseError) -> None:
        """The evaluation is one transaction: it either committed (its figures are
        in `outcome`) or left nothing; emails not sent stay owed for the next sweep."""
        reason = " ".join(str(error).split()) or type(error).__name__
        message = f"The database failed ({type(error).__name__}): {reason}"
        if options["json"]:
            self.stdout.write(json.dumps(outcome.as_json() | {"error": message}))
        raise CommandError(message, returncode=1)
