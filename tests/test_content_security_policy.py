"""Every page is served with the Content-Security-Policy and satisfies it: no inline
script, no event handler attribute, no style attribute or element. (The browser tests,
tests/e2e, also fail on any violation Chromium reports.)"""

from html.parser import HTMLParser

import pytest
from django.urls import reverse

# february: the date the pages of the world fixture expect (autouse).
from tests.accounts.test_permissions import PAGES, february  # noqa: F401

pytestmark = pytest.mark.django_db

# The promises of the policy; the rest is in CONTENT_SECURITY_POLICY (settings).
PROMISED = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "frame-ancestors": ["'none'"],
}
DATA_SCRIPTS = {"application/json"}  # json_script's data blocks never run


class InlineCode(HTMLParser):
    """Collects what the policy would block in a page: inline scripts, `on…` handler
    attributes, style attributes and <style> elements."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._script: bool = False

    def handle_starttag(self, tag, attrs):
        names = dict(attrs)
        for name in names:
            if name.startswith("on") or name == "style":
                self.found.append(f"<{tag} {name}=...>")
        if tag == "style":
            self.found.append("<style>")
        self._script = (
            tag == "script"
            and "src" not in names
            and names.get("type") not in DATA_SCRIPTS
        )

    def handle_data(self, data):
        if self._script and data.strip():
            self.found.append(f"<script>{data.strip()[:40]}")

    def handle_endtag(self, tag):
        self._script = False


def directives(header: str) -> dict[str, list[str]]:
    parts = [part.split() for part in header.split(";")]
    return {name: sources for name, *sources in parts}


def pages_someone_sees() -> list[tuple[str, str]]:
    """(url name, a persona answered 200) for every GET page of the portal."""
    return sorted(
        (name, next(p for p, status in expected.items() if status == 200))
        for name, (_, expected) in PAGES.items()
        if 200 in expected.values()
    )


@pytest.mark.parametrize(("name", "persona"), pages_someone_sees())
def test_every_page_has_the_policy_and_no_inline_code(client, world, name, persona):
    if persona != "anonymous":
        client.force_login(getattr(world, persona))

    response = client.get(reverse(name, kwargs=PAGES[name][0](world)))

    assert response.status_code == 200
    policy = directives(response.headers["Content-Security-Policy"])
    assert {name: policy.get(name) for name in PROMISED} == PROMISED
    if response.headers["Content-Type"].startswith("text/html"):
        parser = InlineCode()
        parser.feed(response.content.decode())
        assert parser.found == []


@pytest.mark.parametrize("url", ["/admin/", "/admin/projects/allocationrule/"])
def test_the_admin_has_no_inline_code_either(admin_client, url):
    parser = InlineCode()
    parser.feed(admin_client.get(url).content.decode())

    assert parser.found == []
