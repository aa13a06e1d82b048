"""Sources that Spendtracker fetches itself (provider APIs, buckets), as opposed to
files that people import. Each kind registers a fetcher; `billing_sync` runs them."""

from collections.abc import Iterator
from datetime import datetime
from typing import Protocol

from billing.models import BillingSource


class ProviderError(Exception):
    """The provider failed or refused for now (5xx, rate limit, network): try later."""


class Fetcher(Protocol):
    kind: str

    def fetch(self, *, source: BillingSource, since: datetime) -> Iterator[dict]:
        """Normalised rows (see importers.base.new_row) for every billing period from
        the one containing `since` up to now, complete for each period it yields."""
        ...


FETCHERS: dict[str, type[Fetcher]] = {}


def register(fetcher: type[Fetcher]) -> type[Fetcher]:
    FETCHERS[fetcher.kind] = fetcher
    return fetcher


def fetcher_for(source: BillingSource) -> Fetcher | None:
    fetcher = FETCHERS.get(source.kind)
    return fetcher() if fetcher else None


# Last, because the fetcher modules import register() and ProviderError from here.
from billing.importers import anthropic_costs, gcp_billing, openai_costs  # noqa: E402,F401 (registers the fetchers)
