from django.apps import AppConfig


class CoreConfig(AppConfig):
    """Helpers every app may use: money and currencies, months, encryption, admin
    display. It imports no other app of ours."""

    name = "core"
