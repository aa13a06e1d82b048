"""Testing a source's connection: a worker asks the provider for the first page a sync
would fetch, imports nothing, and stores on the source what worked and what failed, in
three steps (credentials, permissions, data present) with the provider's HTTP status.

Only sources of a provider's cost API (OpenAI, Anthropic) are tested so far: their
first page is small. The bucket fetchers (S3, Azure, Cloud Storage) would download a
whole export file for their first row; they get no test yet. As everywhere, no message
repeats the credentials or what the provider answered (billing.importers.http).
"""

import logging
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from billing.importers.base import ImportFailure, ProviderError
from billing.models import BillingSource
from billing.services import sync_since
from billing.sync import FETCHERS
from core.crypto import UNREADABLE_SHORT, CredentialsUnreadable
from core.tasks import enqueue_after_commit

logger = logging.getLogger(__name__)

TESTED_KINDS = frozenset({BillingSource.Kind.OPENAI, BillingSource.Kind.ANTHROPIC})
STEPS = ("credentials", "permissions", "data")
# A test queued longer ago than this ran on no worker: the page says so.
STALE_AFTER = timedelta(minutes=10)


def connection_testable(source: BillingSource) -> bool:
    return source.kind in TESTED_KINDS


@transaction.atomic
def connection_test_queue(*, source: BillingSource) -> None:
    """Marks the source's test as queued (the page says "testing…") and queues it for
    a worker once that commits: it asks the provider over the network."""
    from billing.tasks import source_connection_test  # tasks import this module

    source.connection_test = {"queued_at": timezone.now().isoformat()}
    source.save(update_fields=["connection_test"])
    enqueue_after_commit(source_connection_test, source.pk)


def connection_test_shown(source: BillingSource) -> dict:
    """The latest test as the page shows it: its moments as datetimes, and `stale`
    for a test still queued after STALE_AFTER, which no worker took."""
    shown = dict(source.connection_test)
    for moment in ("queued_at", "checked_at"):
        if moment in shown:
            shown[moment] = datetime.fromisoformat(shown[moment])
    shown["stale"] = (
        "queued_at" in shown
        and "checked_at" not in shown
        and shown["queued_at"] < timezone.now() - STALE_AFTER
    )
    return shown


def connection_test_run(source: BillingSource) -> dict:
    """Asks for the first page a sync would fetch and stores the outcome; never leaves
    the test queued, whatever fails."""
    try:
        steps = _steps(source)
    except Exception:
        logger.exception("The connection test of source %s failed", source.pk)
        steps = _failed_at(
            "credentials", "The test could not run; the error is in the worker's log."
        )
    source.connection_test = {
        "checked_at": timezone.now().isoformat(),
        "ok": all(step["ok"] for step in steps),
        "steps": steps,
    }
    source.save(update_fields=["connection_test"])
    return source.connection_test


def _steps(source: BillingSource) -> list[dict]:
    since = sync_since()
    fetcher = FETCHERS[source.kind]()
    try:
        first = next(iter(fetcher.fetch(source=source, since=since)), None)
    except CredentialsUnreadable:
        return _failed_at("credentials", f"The stored {UNREADABLE_SHORT}.")
    except (ImportFailure, ProviderError) as failure:
        return _failure_steps(failure)
    found = (
        f"Cost data since {since:%-d %B %Y} was found."
        if first is not None
        else f"The provider has no cost data since {since:%-d %B %Y} yet: the "
        "first sync will import nothing until there is some."
    )
    return [
        _step("credentials", True, "The provider accepted them (HTTP 200)."),
        _step("permissions", True, "They may read the organisation's costs."),
        _step("data", first is not None, found),
    ]


def _failure_steps(failure: ImportFailure | ProviderError) -> list[dict]:
    status, message = failure.http_status, f"{failure}."
    # The messages say the status in words (billing.importers.http).
    if status == 401:
        return _failed_at("credentials", message)
    if status == 403:
        return _failed_at("permissions", message)
    if status is not None or getattr(failure, "file", ""):
        # The provider answered, but not with a page the sync can read.
        return _failed_at("data", message)
    # Nothing was sent, or nothing came back: the endpoint, the key or the network.
    return _failed_at("credentials", message)


def _failed_at(failed: str, message: str) -> list[dict]:
    steps = []
    for name in STEPS:
        if name == failed:
            steps.append(_step(name, False, message))
            break
        steps.append(_step(name, True, "Accepted."))
    return steps + [_step(name, None, "Not checked.") for name in STEPS[len(steps) :]]


def _step(name: str, ok: bool | None, text: str) -> dict:
    return {"step": name, "ok": ok, "text": text}
