"""Anthropic cost report (Admin API): what an organisation was billed, per UTC day,
workspace and cost description (shared/reference/billing-formats.md, section 6.2).

`GET {base_url}/v1/organizations/cost_report` with an Admin API key in `x-api-key`
and `anthropic-version: 2023-06-01`; `starting_at` (RFC 3339), `bucket_width=1d`,
`limit` buckets a page (at most 31), `group_by[]=workspace_id&group_by[]=description`;
the next page is asked for with `page` = the previous answer's `next_page` while
`has_more`.

- `amount` is a decimal string in the currency's lowest unit: "123.45" in "USD" is
  $1.2345. It becomes dollars exactly (the decimal point moves two places); only digits
  beyond CostRecord's 11 decimal places are rounded. The docs say the currency is
  "currently always USD"; moving two places assumes a currency with cents, which holds
  for USD and would need revisiting if another currency ever appears.
- One row per bucket and result. The report gives one amount (the docs do not say
  whether before or after discounts), so the four cost measures are all that amount.
  Charge period: the bucket [starting_at, ending_at); billing period: the calendar
  month of the bucket's start.
- The workspace becomes the tag `anthropic_workspace_id` (and the sub account), so tag
  rules can allocate workspaces. Grouped by workspace, a null `workspace_id` is the
  default workspace (the docs: "null if not grouping by workspace or for the default
  workspace"), which has no id: it is tagged "default" so a rule can still claim it.
- Charge description: `description` ("Claude Sonnet 4 Usage - Input Tokens"); it and
  the other detail fields (model, cost_type, token_type) are null unless grouped by
  description.

Unsure, and so left as documented: the reference notes that the newest docs mark the
usage report endpoints "[Legacy]" in favour of a beta Analytics API, without saying
whether the cost report goes the same way; and two third-party sources quoting
Anthropic say this report leaves out Priority Tier costs (not in the reference,
unverified): an organisation on Priority Tier may be billed more than is loaded here.

Source config (all optional): `base_url`, an https address of Anthropic (or one in
SOURCE_ENDPOINT_ALLOWLIST, billing/endpoints.py); `organization`, the organisation
id: the billing account; `group_by`, default ["workspace_id", "description"].
Credentials: {"api_key": "<admin key, sk-ant-admin…>"}.

The same pages saved to a file import too (`AnthropicCostsImporter`, format
`anthropic`, told apart by a page's keys `data` and `has_more` without OpenAI's
`object`): one page, or a JSON list of pages, each bucket read by the same
`_bucket_rows` as a sync. A file does not say how it was grouped: it is taken as
grouped by workspace when any result names one (a null workspace is then the default
workspace). Its billing account is "anthropic", as for a source without one.
"""

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from billing.importers.http import (
    Node,
    ProviderApi,
    api_key,
    config_group_by,
    config_text,
    cost,
    endpoint_allowed,
    usage_row,
)
from billing.importers.json_file import saved_pages
from billing.models import BillingSource

DEFAULT_BASE_URL = "https://api.anthropic.com"
COST_REPORT_PATH = "/v1/organizations/cost_report"
API_VERSION = "2023-06-01"
BUCKETS_PER_PAGE = 31  # the most the API takes
GROUPS = ("workspace_id", "description")
DEFAULT_WORKSPACE = "default"
PROVIDER = "Anthropic"
DEFAULT_ACCOUNT = "anthropic"
PAGE_KEYS = frozenset({"data", "has_more"})


class AnthropicCostsFetcher:
    kind = "anthropic"

    def fetch(self, *, source: BillingSource, since: datetime) -> Iterator[dict]:
        base_url = endpoint_allowed(
            source, config_text(source, "base_url") or DEFAULT_BASE_URL
        )
        key = api_key(source)
        groups = config_group_by(source, GROUPS)
        params = {
            "starting_at": since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "bucket_width": "1d",
            "limit": BUCKETS_PER_PAGE,
            "group_by[]": groups,
        }
        account = config_text(source, "organization") or DEFAULT_ACCOUNT
        headers = {"x-api-key": key, "anthropic-version": API_VERSION}
        with ProviderApi(
            name=PROVIDER, base_url=base_url, headers=headers, secret=key
        ) as api:
            for page in api.pages(COST_REPORT_PATH, params):
                for bucket in page["data"].items():
                    yield from _bucket_rows(
                        bucket, account, by_workspace="workspace_id" in groups
                    )


class AnthropicCostsImporter:
    name = "anthropic"

    @staticmethod
    def accepts(header: list[str]) -> bool:
        keys = set(header)
        return keys >= PAGE_KEYS and "object" not in keys

    def rows(self, path: Path) -> Iterator[dict]:
        pages = saved_pages(path)
        buckets = [bucket for page in pages for bucket in page["data"].items()]
        by_workspace = any(
            result.optional("workspace_id")
            for bucket in buckets
            for result in bucket["results"].items()
        )
        for bucket in buckets:
            yield from _bucket_rows(bucket, DEFAULT_ACCOUNT, by_workspace=by_workspace)


def _bucket_rows(bucket: Node, account: str, *, by_workspace: bool) -> Iterator[dict]:
    start = _moment(bucket["starting_at"])
    end = _moment(bucket["ending_at"])
    if end <= start:
        raise bucket["ending_at"].fail("is not after starting_at")
    for result in bucket["results"].items():
        workspace = _workspace(result, by_workspace=by_workspace)
        description = result.optional("description")
        # Lowest currency units (cents) to dollars: exact, the point moves two places.
        dollars = cost(result["amount"].decimal().scaleb(-2))
        yield usage_row(
            provider=PROVIDER,
            service="Claude API",
            account=account,
            sub_account=workspace,
            sub_account_tag="anthropic_workspace_id",
            description=description.text() if description else "",
            currency=result["currency"].currency(),
            start=start,
            end=end,
            amount=dollars,
        )


def _moment(node: Node) -> datetime:
    try:
        moment = datetime.fromisoformat(node.text())
    except ValueError:
        raise node.fail(f"is {node.value!r}, not an RFC 3339 time") from None
    # The report's buckets are UTC days; a time without an offset is read as UTC.
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _workspace(result: Node, *, by_workspace: bool) -> str:
    workspace = result.optional("workspace_id")
    if workspace:
        return workspace.text()
    return DEFAULT_WORKSPACE if by_workspace else ""
