"""Where a fetched source may send its credentials: the provider's own hosts over
https, or an address listed in SOURCE_ENDPOINT_ALLOWLIST (a proxy, a local store).

An endpoint set in a source's config is checked when the source is saved and again
before every fetch, so a bad address stored some other way fails the sync before any
credential leaves.
"""

from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from django.conf import settings

from billing.models import BillingSource


@dataclass(frozen=True)
class ProviderHosts:
    """The config key that holds a kind's endpoint ("" when the credentials name
    it), and the hosts it may name: an exact host, or every host under a domain
    written with a leading dot."""

    config_key: str
    hosts: tuple[str, ...]


ENDPOINTS = {
    # A service-account key names the address it asks for tokens: its token_uri.
    BillingSource.Kind.GCP: ProviderHosts("", ("oauth2.googleapis.com",)),
    BillingSource.Kind.OPENAI: ProviderHosts("base_url", ("api.openai.com",)),
    BillingSource.Kind.ANTHROPIC: ProviderHosts("base_url", ("api.anthropic.com",)),
    BillingSource.Kind.AWS_CUR: ProviderHosts(
        "endpoint_url", (".amazonaws.com", ".amazonaws.com.cn")
    ),
    BillingSource.Kind.AZURE: ProviderHosts(
        "account_url",
        (
            ".blob.core.windows.net",
            ".blob.core.chinacloudapi.cn",
            ".blob.core.usgovcloudapi.net",
        ),
    ),
}


class EndpointRefused(ValueError):
    """An address the source may not send its credentials to."""


def endpoint_config_key(kind: str) -> str | None:
    """The config key that names the kind's endpoint; None for kinds without one."""
    provider = ENDPOINTS.get(BillingSource.Kind(kind)) if kind else None
    return provider.config_key if provider and provider.config_key else None


def configured_endpoint(kind: str, config: object) -> str:
    """The endpoint a config of the kind names ("" for the provider's default)."""
    key = endpoint_config_key(kind)
    value = config.get(key) if key and isinstance(config, dict) else ""
    return value.strip() if isinstance(value, str) else ""


def endpoint_check(*, kind: str, url: str) -> None:
    """Refuse `url` unless it is one of the kind's provider hosts over https, or
    listed in SOURCE_ENDPOINT_ALLOWLIST."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (a port that is not a number raises here)
    except ValueError:
        raise EndpointRefused(f"{url!r} is not a web address") from None
    if parts.username or parts.password:
        raise EndpointRefused(f"{_origin(parts)}: an address may not carry a login")
    if _allowlisted(parts) or _provider_host(kind, parts):
        return
    provider = ENDPOINTS.get(BillingSource.Kind(kind))
    hosts = ", ".join(host.lstrip(".") for host in provider.hosts) if provider else ""
    raise EndpointRefused(
        f"{_origin(parts) or repr(url)} is not an address of the provider "
        f"({hosts} over https): credentials are only sent there, or to an address "
        "an operator lists in SOURCE_ENDPOINT_ALLOWLIST"
    )


def _provider_host(kind: str, parts: SplitResult) -> bool:
    provider = ENDPOINTS.get(BillingSource.Kind(kind))
    host = (parts.hostname or "").rstrip(".")
    if provider is None or parts.scheme != "https" or parts.port not in (None, 443):
        return False
    return any(
        host.endswith(allowed) if allowed.startswith(".") else host == allowed
        for allowed in provider.hosts
    )


def _allowlisted(parts: SplitResult) -> bool:
    allowed = {_key(urlsplit(entry)) for entry in settings.SOURCE_ENDPOINT_ALLOWLIST}
    return _key(parts) in allowed


def _key(parts: SplitResult) -> tuple[str, str, int | None]:
    default = {"https": 443, "http": 80}.get(parts.scheme)
    return parts.scheme, (parts.hostname or ""), parts.port or default


def _origin(parts: SplitResult) -> str:
    if not parts.hostname:
        return ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}"
