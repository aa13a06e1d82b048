import getpass
import os
import sys

from django.core.management.base import BaseCommand, CommandError

from accounts.services import (
    BootstrapRefused,
    bootstrap_check,
    bootstrap_password_check,
    organisation_bootstrap,
)

PASSWORD_VARIABLE = "DJANGO_SUPERUSER_PASSWORD"  # as Django's createsuperuser reads it
PROMPT_ATTEMPTS = 3


class Command(BaseCommand):
    help = (
        "Set up a fresh install: name the organisation and create its first admin, "
        "without demo data. The password comes from DJANGO_SUPERUSER_PASSWORD or is "
        "asked for. Refused once an admin exists."
    )

    stealth_options = ("stdin",)

    def add_arguments(self, parser):
        parser.add_argument("--organisation", required=True, metavar="NAME")
        parser.add_argument("--admin-email", required=True, metavar="EMAIL")

    def execute(self, *args, **options):
        # As createsuperuser: a test may pass its own stdin.
        self.stdin = options.get("stdin", sys.stdin)
        return super().execute(*args, **options)

    def handle(self, *args, **options):
        name, email = options["organisation"], options["admin_email"]
        try:
            email = bootstrap_check(name=name, admin_email=email)
            password = self._password(email)
            admin = organisation_bootstrap(
                name=name, admin_email=email, password=password
            )
        except BootstrapRefused as refused:
            raise CommandError(str(refused)) from refused
        self.stdout.write(
            f"{name.strip()} is set up; {admin.email} is its admin. Log in to the "
            "portal, then connect a billing source (Billing sources), create a team "
            "and a project (Django admin), and upload or sync the first costs."
        )

    def _password(self, email: str) -> str:
        password = os.environ.get(PASSWORD_VARIABLE)
        if password is not None:
            return password
        if not self.stdin.isatty():
            raise BootstrapRefused(
                f"No password: set {PASSWORD_VARIABLE}, or run bootstrap in a "
                "terminal to be asked for one."
            )
        for _attempt in range(PROMPT_ATTEMPTS):
            password = getpass.getpass(f"Password for {email}: ")
            if password != getpass.getpass("Password (again): "):
                self.stderr.write("The two passwords differ; try again.")
                continue
            try:
                bootstrap_password_check(email=email, password=password)
            except BootstrapRefused as weak:
                self.stderr.write(f"{weak} Try again.")
                continue
            return password
        raise BootstrapRefused(f"No acceptable password after {PROMPT_ATTEMPTS} tries.")
