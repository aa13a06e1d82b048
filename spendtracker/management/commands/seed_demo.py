from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from spendtracker.demo import DEMO_PASSWORD, DEMO_USERS, demo_seed


class Command(BaseCommand):
    help = "Load the demo organisation; a second run updates, never duplicates."

    def add_arguments(self, parser):
        parser.add_argument(
            "--force",
            action="store_true",
            help="Seed even with DJANGO_DEBUG off (demo logins share one password).",
        )

    def handle(self, *args, **options):
        if not settings.DEBUG and not options["force"]:
            raise CommandError(
                "Refusing to create demo logins with DJANGO_DEBUG off; pass --force."
            )
        counts = demo_seed(today=timezone.now().date())
        self.stdout.write(
            f"Demo data ready: {counts['projects']} projects, "
            f"{counts['cost_records']} cost records."
        )
        self.stdout.write(f"Demo logins (password {DEMO_PASSWORD}):")
        for email, name, _role in DEMO_USERS[:4]:
            self.stdout.write(f"  {email:<22} {name}")
