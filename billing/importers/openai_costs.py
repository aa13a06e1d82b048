"""OpenAI Costs API: what an organisation was billed, per UTC day, project and line
item (shared/reference/billing-formats.md, section 6.1).

`GET {base_url}/v1/organization/costs` with an Admin API key as a Bearer token,
`start_time` in Unix seconds, `bucket_width=1d` and `limit` buckets a page; the next
page is asked for with `page` = the previous answer's `next_page` while `has_more`.

- `amount.value` is a JSON number in dollars: it is read from the response text
  straight into a Decimal, never through a float; only digits beyond CostRecord's 11
  decimal places are rounded. The currency is lower case ("usd"): upper-cased.
- One row per bucket and result; a result is one project and line item when grouped
  by them. The API gives one amount, so the four cost measures are all that amount
  (it publishes no list or contracted prices). Charge period: the bucket
  [start_time, end_time); billing period: the calendar month of the bucket's start.
- The project becomes the tag `openai_project_id` (and the sub account), so tag rules
  can allocate projects. A result with a null project_id, which the docs do not
  explain beyond "when group_by=project_id", gets no tag and stays unallocated
  unless another rule matches it.
- The reference's table writes `group_by[]` and `project_ids[]`; OpenAI's OpenAPI
  description names them `group_by` and `project_ids` (arrays, one query parameter
  per value), which is what OpenAI's own cookbook sends: so does this module.

Source config (all optional): `base_url`, an https address of OpenAI (or one in
SOURCE_ENDPOINT_ALLOWLIST, billing/endpoints.py); `organization`, the organisation
id (`org-…`): the billing account, and sent as the `OpenAI-Organization` header;
`project`, a project id or a list of them, to fetch only those; `group_by`, default
["project_id", "line_item"]. Credentials: {"api_key": "<admin key>"}.

The same pages saved to a file import too (`OpenAICostsImporter`, format `openai`,
told apart by a page's keys `object`, `data`, `has_more`): one page, or a JSON list of
pages, each bucket read by the same `_bucket_rows` as a sync. A file knows no
organisation: its billing account is "openai", as for a source without one.
"""

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from billing.importers.base import ImportFailure
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

DEFAULT_BASE_URL = "https://api.openai.com"
COSTS_PATH = "/v1/organization/costs"
BUCKETS_PER_PAGE = 31  # the API takes 1 to 180
GROUPS = ("project_id", "line_item")
PROVIDER = "OpenAI"
DEFAULT_ACCOUNT = "openai"
PAGE_KEYS = frozenset({"object", "data", "has_more"})  # only OpenAI's pages say object


class OpenAICostsFetcher:
    kind = "openai"

    def fetch(self, *, source: BillingSource, since: datetime) -> Iterator[dict]:
        base_url = endpoint_allowed(
            source, config_text(source, "base_url") or DEFAULT_BASE_URL
        )
        key = api_key(source)
        organization = config_text(source, "organization")
        headers = {"Authorization": f"Bearer {key}"}
        if organization:
            headers["OpenAI-Organization"] = organization
        params: dict[str, object] = {
            "start_time": int(since.timestamp()),
            "bucket_width": "1d",
            "limit": BUCKETS_PER_PAGE,
            "group_by": config_group_by(source, GROUPS),
        }
        if projects := _projects(source):
            params["project_ids"] = projects
        with ProviderApi(
            name=PROVIDER, base_url=base_url, headers=headers, secret=key
        ) as api:
            for page in api.pages(COSTS_PATH, params):
                for bucket in page["data"].items():
                    yield from _bucket_rows(bucket, organization or DEFAULT_ACCOUNT)


class OpenAICostsImporter:
    name = "openai"

    @staticmethod
    def accepts(header: list[str]) -> bool:
        return set(header) >= PAGE_KEYS

    def rows(self, path: Path) -> Iterator[dict]:
        for page in saved_pages(path):
            for bucket in page["data"].items():
                yield from _bucket_rows(bucket, DEFAULT_ACCOUNT)


def _bucket_rows(bucket: Node, account: str) -> Iterator[dict]:
    start = _moment(bucket["start_time"])
    end = _moment(bucket["end_time"])
    if end <= start:
        raise bucket["end_time"].fail("is not after start_time")
    for result in bucket["results"].items():
        amount = result["amount"]
        project = result.optional("project_id")
        line_item = result.optional("line_item")
        yield usage_row(
            provider=PROVIDER,
            service="OpenAI API",
            account=account,
            sub_account=project.text() if project else "",
            sub_account_tag="openai_project_id",
            description=line_item.text() if line_item else "",
            currency=amount["currency"].currency(),
            start=start,
            end=end,
            amount=cost(amount["value"].decimal()),
        )


def _moment(node: Node) -> datetime:
    return datetime.fromtimestamp(node.integer(), tz=UTC)


def _projects(source: BillingSource) -> list[str]:
    value = (source.config or {}).get("project") or []
    projects = [value] if isinstance(value, str) else value
    if not isinstance(projects, list) or not all(
        isinstance(project, str) for project in projects
    ):
        raise ImportFailure(
            f"{source.name}: config project must be a project id or a list of them"
        )
    return projects
