"""What billing announces to the apps that read its data. Billing imports no later app:
an app that must act on new cost data listens here."""

from django.dispatch import Signal

# Sent once the transaction of an import that loaded data has committed, with the
# ImportRun as `run`. Budgets evaluates its alerts on it.
import_finished = Signal()
