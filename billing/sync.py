"""Sources that Spendtracker fetches itself (provider APIs, buckets), as opposed to
files that people import. Each such kind has a fetcher, listed here; `billing_sync`
runs them."""

from billing.importers.anthropic_costs import AnthropicCostsFetcher
from billing.importers.aws_s3 import AwsS3CurFetcher
from billing.importers.azure_blob import AzureBlobExportFetcher
from billing.importers.base import Fetcher
from billing.importers.gcp_billing import GcpBillingFetcher
from billing.importers.openai_costs import OpenAICostsFetcher
from billing.models import BillingSource

FETCHERS: dict[str, type[Fetcher]] = {
    fetcher.kind: fetcher
    for fetcher in (
        AnthropicCostsFetcher,
        AwsS3CurFetcher,
        AzureBlobExportFetcher,
        GcpBillingFetcher,
        OpenAICostsFetcher,
    )
}


def fetcher_for(source: BillingSource) -> Fetcher | None:
    """The fetcher that syncs this source, or None for a source fed by imports."""
    fetcher = FETCHERS.get(source.kind)
    if fetcher is None or not getattr(fetcher, "syncs", lambda source: True)(source):
        return None
    return fetcher()


def sources_to_sync() -> list[BillingSource]:
    enabled = BillingSource.objects.filter(is_enabled=True, kind__in=FETCHERS)
    return [source for source in enabled if fetcher_for(source)]
