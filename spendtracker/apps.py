from django.apps import AppConfig


class SpendtrackerConfig(AppConfig):
    name = "spendtracker"

    def ready(self) -> None:
        from spendtracker import checks  # noqa: F401  (registers the system checks)
