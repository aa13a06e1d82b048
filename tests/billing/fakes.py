"""A local fake of a provider's paged cost API: it serves recorded pages by their
`page` cursor, answers scripted failures first, and records every request it gets.

A subclass per provider says which key, headers, path and query the provider accepts
and how it words an error; `fake_provider_fixture` makes it a pytest fixture that
serves it on 127.0.0.1 for one test.
"""

import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, NamedTuple
from urllib.parse import parse_qs, urlsplit

import pytest

from billing.importers import http as provider_http

Request = dict[str, Any]  # path, query (as parse_qs reads it) and headers


class ApiError(NamedTuple):
    status: int
    message: str
    kind: str = "api_error"  # for a provider whose errors name their type


@dataclass
class FakeProvider(ABC):
    pages: dict[str | None, bytes]
    url: str = ""
    # Statuses to answer, in order, before the recorded pages are served again.
    failures: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)

    # What the provider says with a scripted failure.
    overloaded: ClassVar[str]

    @abstractmethod
    def refusal(self, request: Request) -> ApiError | None:
        """A wrong key or header: refused before anything else, even a failure."""

    @abstractmethod
    def rejection(self, request: Request) -> ApiError | None:
        """A wrong path or query: refused only when no failure is scripted."""

    @abstractmethod
    def error_body(self, error: ApiError) -> dict[str, Any]:
        """The provider's JSON for an error."""

    def fail(self, status: int, times: int = 1, **headers: str) -> None:
        self.failures += [(status, headers)] * times

    def wrong_parameters(
        self, request: Request, *, expected: dict[str, list[str]], most: int
    ) -> list[str]:
        """The query parameters the provider would refuse: one that differs from
        `expected`, a `limit` outside 1 to `most`, or a page cursor it never gave."""
        query = request["query"]
        wrong = [name for name, value in expected.items() if query.get(name) != value]
        if not 1 <= int(query.get("limit", ["7"])[0]) <= most:
            wrong.append("limit")
        if page_asked(request) not in self.pages:
            wrong.append("page")
        return wrong

    def answer(self, request: Request) -> tuple[int, bytes, dict[str, str]]:
        if refused := self.refusal(request):
            return self.error(refused)
        if self.failures:
            status, headers = self.failures.pop(0)
            return self.error(ApiError(status, self.overloaded), headers)
        if rejected := self.rejection(request):
            return self.error(rejected)
        return 200, self.pages[page_asked(request)], {}

    def error(
        self, error: ApiError, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes, dict[str, str]]:
        return error.status, json.dumps(self.error_body(error)).encode(), headers or {}


def page_asked(request: Request) -> str | None:
    """The cursor of the page asked for; None for the first page."""
    return request["query"].get("page", [None])[0]


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        request = {
            "path": url.path,
            "query": parse_qs(url.query),
            "headers": self.headers,
        }
        self.server.fake.requests.append(request)
        status, body, headers = self.server.fake.answer(request)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test asserts on `requests` instead."""


class _Server(ThreadingHTTPServer):
    fake: FakeProvider


def fake_provider_fixture(make: Callable[[], FakeProvider]) -> Callable:
    """A fixture that serves a fresh fake from `make` for one test; the fixture's
    name is the one it is assigned to: `fake_openai = fake_provider_fixture(...)`."""

    @pytest.fixture
    def serve(monkeypatch: pytest.MonkeyPatch, settings) -> Iterator[FakeProvider]:
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        # Retries wait milliseconds instead of seconds.
        monkeypatch.setattr(provider_http, "BACKOFF_FACTOR", 0.001)
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = make()
        server.fake.url = f"http://127.0.0.1:{server.server_port}"
        # The fake is no provider's host: sources may use it only by the allowlist.
        settings.SOURCE_ENDPOINT_ALLOWLIST = [server.fake.url]
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        thread.start()
        try:
            yield server.fake
        finally:
            server.shutdown()
            server.server_close()

    return serve
