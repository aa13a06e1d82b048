from django.core.management.base import BaseCommand, CommandError

from billing.services import credentials_rotate
from core.crypto import CredentialsUnreadable


class Command(BaseCommand):
    help = (
        "Encrypt every billing source's stored credentials again with the first key "
        "of FIELD_ENCRYPTION_KEY (new key first, old key after it, comma-separated); "
        "afterwards the old key can be removed."
    )

    def handle(self, *args, **options) -> None:
        try:
            names = credentials_rotate()
        except CredentialsUnreadable as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"Encrypted the credentials of {len(names)} sources with the first key"
            + (f": {', '.join(names)}" if names else "")
            + ". Keys after the first can now be removed from FIELD_ENCRYPTION_KEY."
        )
