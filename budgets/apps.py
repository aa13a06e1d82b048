from django.apps import AppConfig


class BudgetsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "budgets"

    def ready(self) -> None:
        from budgets import receivers  # noqa: F401  (connects to billing's signals)
