import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "spendtracker.settings")

app = Celery("spendtracker")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.worker_init.connect
@signals.beat_init.connect
def refuse_bad_configuration(**kwargs) -> None:
    """Run the system checks that manage.py runs, so a misconfigured worker or beat
    stops at start naming the variable instead of running on defaults."""
    from django.core.management import call_command

    call_command("check", fail_level="ERROR")
