"""Sources that Spendtracker fetches itself (provider APIs, buckets), as opposed to
files that people import. Each kind registers a fetcher; `billing_sync` runs them."""

from collections.abc import Iterator
from datetime import datetime
from typing import Protocol

from billing.models import BillingSource


class ProviderError(Exception):
    """The provider failed or refused for now (5xx, rate limit, network): try later."""


class Fetcher(Protocol):
    """Fetches one kind of source. Optional: a static `syncs(source) -> bool`, false
    for a source of that kind that is fed by file imports instead (no bucket set)."""

    kind: str

    def fetch(self, *, source: BillingSource, since: datetime) -> Iterator[dict]:
        """Normalised rows (see importers.base.new_row) for every billing period from
        the one containing `since` up to now, complete for each period it yields.

        A fetcher that skips periods it knows to be unchanged sets `covered_periods`
        (the month starts it restates in full) by the time fetch() returns; the other
        periods keep their rows. On PostgreSQL the rows stream into a COPY, so the
        fetcher must not query the database while they are being read."""
        ...


FETCHERS: dict[str, type[Fetcher]] = {}


def register(fetcher: type[Fetcher]) -> type[Fetcher]:
    FETCHERS[fetcher.kind] = fetcher
    return fetcher


def fetcher_for(source: BillingSource) -> Fetcher | None:
    """The fetcher that syncs this source, or None for a source fed by imports."""
    fetcher = FETCHERS.get(source.kind)
    if fetcher is None or not getattr(fetcher, "syncs", lambda source: True)(source):
        return None
    return fetcher()


def sources_to_sync() -> list[BillingSource]:
    enabled = BillingSource.objects.filter(is_enabled=True, kind__in=FETCHERS)
    return [source for source in enabled if fetcher_for(source)]


# Last, because the fetcher modules import register() and ProviderError from here.
from billing.importers import anthropic_costs, aws_s3, gcp_billing, openai_costs  # noqa: E402,F401 (registers the fetchers)
