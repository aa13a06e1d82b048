"""What the fetchers of provider APIs share: one HTTP session that retries what is
transient, pages through `has_more` / `next_page`, and reads the JSON it gets back so
that a missing or mistyped field is named; and the cost row of a day's usage.

Failures that may pass (rate limits, 5xx, the network) raise ProviderError, and the
Celery task retries the sync later. Failures that will not pass on their own (a refused
key, a refused request, a response of an unexpected shape) raise ImportFailure: they
need a person. No message ever repeats the API key, and none repeats what the
provider answered: an error says its HTTP status and what that means (the answer's
beginning goes to the log only). Redirects are not followed, so the key is sent to the
endpoint the source names and nowhere else.
"""

import json
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from itertools import count
from typing import Any, Self

import requests
from dateutil.relativedelta import relativedelta
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from billing.endpoints import EndpointRefused, endpoint_check
from billing.importers.base import (
    ImportFailure,
    ProviderError,
    checked_texts,
    new_row,
)
from billing.models import COST_COLUMNS, COST_DIGITS, BillingSource
from core.currencies import ISO_4217_CODES

RETRIES = 4
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
# urllib3 waits 0 s before the first retry, then BACKOFF_FACTOR × 2, × 4, × 8 s.
BACKOFF_FACTOR = 2.0
# The fetch runs inside the import transaction, holding the source's row lock: a longer
# pause asked for by Retry-After is cut to this, and the Celery task retries later.
MAX_RETRY_AFTER = 60.0
TIMEOUT = (10, 120)  # seconds: to connect, and between bytes of the answer
LOGGED_ANSWER_CHARS = 300
COST_PLACES = Decimal(1).scaleb(-COST_DIGITS["decimal_places"])
MAX_INTEGER_DIGITS = COST_DIGITS["max_digits"] - COST_DIGITS["decimal_places"]

_KEY_LIKE = re.compile(r"\bsk-[\w\-*.…]{6,}")

logger = logging.getLogger(__name__)


class _Retry(Retry):
    def get_retry_after(self, response: Any) -> float | None:
        wait = super().get_retry_after(response)
        return None if wait is None else min(wait, MAX_RETRY_AFTER)


def api_key(source: BillingSource) -> str:
    key = source.credentials.get("api_key")
    if not isinstance(key, str) or not key.strip():
        raise ImportFailure(
            f"{source.name} has no API key: set its credentials to "
            '{"api_key": "<admin key>"}'
        )
    return key.strip()


def config_text(source: BillingSource, name: str) -> str:
    value = (source.config or {}).get(name) or ""
    if not isinstance(value, str):
        raise ImportFailure(f"{source.name}: config {name} must be a text")
    return value.strip()


def endpoint_allowed(source: BillingSource, url: str) -> str:
    """`url`, once the source may send its credentials there (billing.endpoints):
    a refused address fails the sync before anything is sent."""
    try:
        endpoint_check(kind=source.kind, url=url)
    except EndpointRefused as refused:
        raise ImportFailure(
            f"{source.name}: the endpoint {refused}. Nothing was sent; correct the "
            "source's endpoint and enter its credentials again"
        ) from None
    return url


def config_group_by(source: BillingSource, allowed: tuple[str, ...]) -> list[str]:
    """The source's `group_by`, by default every grouping the endpoint allows."""
    groups = (source.config or {}).get("group_by", list(allowed))
    if not isinstance(groups, list) or not all(group in allowed for group in groups):
        raise ImportFailure(
            f"{source.name}: config group_by must be a list of {', '.join(allowed)}"
        )
    return groups


class ProviderApi:
    """GETs JSON from one provider's API with the same headers on every request."""

    def __init__(
        self, *, name: str, base_url: str, headers: Mapping[str, str], secret: str
    ) -> None:
        self.name, self.base_url, self.secret = name, base_url.rstrip("/"), secret
        self.session = requests.Session()
        self.session.headers.update({"User-Agent": "Spendtracker billing sync"})
        self.session.headers.update(headers)
        retry = _Retry(
            total=RETRIES,
            backoff_factor=BACKOFF_FACTOR,
            status_forcelist=TRANSIENT_STATUSES,
            allowed_methods=frozenset({"GET"}),
            # Hand back the last answer so that its status and text can be reported.
            raise_on_status=False,
        )
        adapter = HTTPAdapter(max_retries=retry)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.session.close()

    def pages(self, path: str, params: Mapping[str, Any]) -> Iterator["Node"]:
        """Every page of a list endpoint: `page` is the previous `next_page` for as
        long as `has_more` says there is more."""
        cursor, seen = None, set()
        for number in count(1):
            query = {**params, "page": cursor} if cursor else dict(params)
            page = Node(self.get(path, query), "", f"{self.name} {path} page {number}")
            yield page
            if not page["has_more"].flag():
                return
            cursor = page["next_page"].text()
            if cursor in seen:
                raise page["next_page"].fail("repeats an earlier page's cursor")
            seen.add(cursor)

    def get(self, path: str, params: Mapping[str, Any]) -> Any:
        try:
            response = self.session.get(
                self.base_url + path,
                params=params,
                timeout=TIMEOUT,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            raise ProviderError(
                self._redact(f"{self.name} could not be reached: {_reason(exc)}")
            ) from exc
        try:
            self._check_status(response)
        except (ImportFailure, ProviderError) as failure:
            failure.http_status = response.status_code  # for the connection test
            raise
        try:
            # Amounts become Decimal straight from the text: a float would round them.
            return json.loads(response.content, parse_float=Decimal)
        except ValueError as exc:
            raise ImportFailure(
                f"{self.name} {path} answered with something that is not JSON ({exc})"
            ) from None

    def _check_status(self, response: requests.Response) -> None:
        status = response.status_code
        if status < 300:
            return
        logger.warning(
            "%s answered HTTP %s: %s",
            self.name,
            status,
            self._redact(response.text[:LOGGED_ANSWER_CHARS]),
        )
        if 300 <= status < 400:
            raise ImportFailure(
                f"{self.name} answered with a redirect (HTTP {status}), which is not "
                "followed: check the source's endpoint"
            )
        if status in (401, 403):
            raise ImportFailure(
                f"{self.name}: the API key was refused (HTTP {status}): check that "
                "it is an admin key of the organisation and still valid"
            )
        if status in TRANSIENT_STATUSES:
            raise ProviderError(
                f"{self.name} still answered HTTP {status} after {RETRIES} retries: "
                "busy or failing on its side"
            )
        if status >= 500:
            raise ProviderError(
                f"{self.name} answered HTTP {status}: a failure on its side"
            )
        raise ImportFailure(
            f"{self.name} refused the request (HTTP {status}): check the source's "
            "config"
        )

    def _redact(self, text: str) -> str:
        if self.secret:
            text = text.replace(self.secret, "[the API key]")
        # Providers echo a masked key ("sk-admin-***abcd") in their errors: drop it too.
        return _KEY_LIKE.sub("[an API key]", text)


def _reason(exc: requests.RequestException) -> str:
    """The cause inside requests' wrapper around urllib3's MaxRetryError."""
    wrapped = exc.args[0] if exc.args else exc
    return str(getattr(wrapped, "reason", None) or wrapped)


@dataclass(frozen=True)
class Node:
    """A value from a provider's JSON, with its path from the top of the page."""

    value: Any
    path: str
    origin: str

    def __getitem__(self, key: str) -> "Node":
        path = f"{self.path}.{key}" if self.path else key
        if not isinstance(self.value, dict):
            raise self.fail("is not an object")
        if key not in self.value:
            raise Node(None, path, self.origin).fail("is missing")
        return Node(self.value[key], path, self.origin)

    def optional(self, key: str) -> "Node | None":
        """The field, or None when the provider left it out or sent null or ""."""
        if isinstance(self.value, dict) and self.value.get(key) not in (None, ""):
            return self[key]
        return None

    def items(self) -> Iterator["Node"]:
        if not isinstance(self.value, list):
            raise self.fail("is not a list")
        for index, value in enumerate(self.value):
            yield Node(value, f"{self.path}[{index}]", self.origin)

    def text(self) -> str:
        if not isinstance(self.value, str) or not self.value:
            raise self.fail(f"is {self.value!r}, not a text")
        return self.value

    def integer(self) -> int:
        if not isinstance(self.value, int) or isinstance(self.value, bool):
            raise self.fail(f"is {self.value!r}, not a whole number")
        return self.value

    def flag(self) -> bool:
        if not isinstance(self.value, bool):
            raise self.fail(f"is {self.value!r}, not true or false")
        return self.value

    def decimal(self) -> Decimal:
        """A JSON number (parsed as Decimal) or a number written as a string, within
        what a CostRecord amount can hold."""
        amount = _decimal_or_none(self.value)
        if amount is None or not amount.is_finite():
            raise self.fail(f"is {self.value!r}, not a number")
        if amount.adjusted() >= MAX_INTEGER_DIGITS:
            raise self.fail(f"is {self.value!r}, too large for a cost")
        return amount

    def currency(self) -> str:
        code = self.text().upper()
        if code not in ISO_4217_CODES:
            raise self.fail(f"is {self.value!r}, not an ISO 4217 currency code")
        return code

    def fail(self, message: str) -> ImportFailure:
        what = f"field {self.path}" if self.path else "the response"
        return ImportFailure(f"{what} {message}", file=self.origin)


def _decimal_or_none(value: object) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        return None
    try:
        return Decimal(value)
    except InvalidOperation:
        return None


def cost(amount: Decimal) -> Decimal:
    """The amount as CostRecord stores it: beyond 11 decimal places (a float printed
    in full) it is rounded here, so the totals reported match what is stored."""
    rounded = amount.quantize(COST_PLACES)
    return amount if rounded == amount else rounded


def billing_month(moment: datetime) -> tuple[datetime, datetime]:
    """The calendar month, in UTC, that contains `moment`: [start, end)."""
    start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return start, start + relativedelta(months=1)


def usage_row(
    *,
    provider: str,
    service: str,
    account: str,
    sub_account: str,
    sub_account_tag: str,
    description: str,
    currency: str,
    start: datetime,
    end: datetime,
    amount: Decimal,
) -> dict:
    """One day's usage of an AI provider's API as a cost row. The APIs give one
    amount, so the four cost measures are all that amount; the billing period is the
    calendar month of the charge's start. The sub account (a project, a workspace) is
    also the tag `sub_account_tag`, so that tag rules can allocate it."""
    period_start, period_end = billing_month(start)
    return checked_texts(
        new_row()
        | {
            "billing_account_id": account,
            "sub_account_id": sub_account,
            "provider_name": provider,
            "publisher_name": provider,
            "invoice_issuer_name": provider,
            "service_name": service,
            "service_category": "AI and Machine Learning",
            "charge_category": "Usage",
            "charge_frequency": "Usage-Based",
            "charge_description": description,
            "billing_currency": currency,
            "billing_period_start": period_start,
            "billing_period_end": period_end,
            "charge_period_start": start,
            "charge_period_end": end,
            **dict.fromkeys(COST_COLUMNS, amount),
            "tags": {sub_account_tag: sub_account} if sub_account else {},
        }
    )
