"""Email backends that misbehave on purpose, for the tests of sending once."""

import os
import time
from pathlib import Path

from django.core.mail.backends.base import BaseEmailBackend


class FailingBackend(BaseEmailBackend):
    """A mail server that is down."""

    def send_messages(self, email_messages):
        raise ConnectionRefusedError("the mail server is down")


class StallingBackend(BaseEmailBackend):
    """Hangs in the middle of sending, after leaving a mark, so that a test can kill
    the worker at exactly that moment."""

    def send_messages(self, email_messages):
        Path(os.environ["STALL_MARKER"]).write_text("sending")
        time.sleep(600)
        return 0
