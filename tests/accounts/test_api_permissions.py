"""Every API endpoint and every method it answers, for every persona, generated from
the URL configuration: a new `api_*` URL, or a new method on a view, without a row in
ENDPOINTS fails `test_every_endpoint_and_method_has_a_rule`.

The rules are the portal's: an outsider gets 404 for another team's object, a member
reads but cannot write (403), finance reads everything and writes no plan. Writes
send an empty JSON object: 400 (or 200 where it changes nothing) means the caller
got past the permission rules to the checks of the data.
"""

from datetime import UTC, date, datetime

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse

PERSONAS = ("anonymous", "lead", "member", "outsider", "finance", "admin")

# An anonymous caller gets 401 with a Bearer challenge (token authentication first).
ANONYMOUS = 401  # WWW-Authenticate: Bearer
SIGNED_IN = {**dict.fromkeys(PERSONAS, 200), "anonymous": ANONYMOUS}
TEAM_ONLY = {**SIGNED_IN, "outsider": 404}
FINANCE_ONLY = {**SIGNED_IN, "lead": 403, "member": 403, "outsider": 403}
PLAN_EDITORS = {**TEAM_ONLY, "member": 403, "finance": 403}
ADMINS_ONLY = {**dict.fromkeys(PERSONAS, 403), "anonymous": ANONYMOUS, "admin": 400}
EVERY_ONE_WHO_SEES = {**TEAM_ONLY, "lead": 400, "member": 400}
EVERY_ONE_WHO_SEES |= {"finance": 400, "admin": 400}

# url name -> (kwargs from the world fixture, {method: expected status per persona})
ENDPOINTS = {
    "api_team_list": (lambda w: {}, {"GET": SIGNED_IN}),
    "api_team_detail": (lambda w: {"slug": w.team.slug}, {"GET": TEAM_ONLY}),
    "api_project_list": (lambda w: {}, {"GET": SIGNED_IN}),
    "api_project_detail": (lambda w: {"slug": w.project.slug}, {"GET": TEAM_ONLY}),
    "api_project_variance": (
        lambda w: {"slug": w.project.slug},
        {"GET": TEAM_ONLY},
    ),
    # The plan: an empty change is valid and changes nothing, for those who may.
    "api_project_plan": (
        lambda w: {"slug": w.project.slug},
        {"GET": TEAM_ONLY, "PUT": PLAN_EDITORS},
    ),
    "api_run_progress": (
        lambda w: {"slug": w.project.slug, "external_id": w.run.external_id},
        {"POST": PLAN_EDITORS},
    ),
    "api_budget_list": (lambda w: {}, {"GET": SIGNED_IN}),
    "api_run_list": (lambda w: {}, {"GET": SIGNED_IN}),
    "api_run_detail": (lambda w: {"run_id": w.run.pk}, {"GET": TEAM_ONLY}),
    "api_run_events": (
        lambda w: {"run_id": w.run.pk},
        {"GET": TEAM_ONLY, "POST": {**PLAN_EDITORS, "lead": 400, "admin": 400}},
    ),
    # Admins add allocation rules, as in Django admin: an empty rule is a 400.
    "api_allocation_rule_list": (
        lambda w: {},
        {"GET": SIGNED_IN, "POST": ADMINS_ONLY},
    ),
    "api_source_list": (lambda w: {}, {"GET": FINANCE_ONLY}),
    "api_source_detail": (lambda w: {"pk": w.source.pk}, {"GET": FINANCE_ONLY}),
    "api_import_list": (lambda w: {}, {"GET": FINANCE_ONLY}),
    "api_import_detail": (lambda w: {"pk": w.import_run.pk}, {"GET": FINANCE_ONLY}),
    "api_cost_record_list": (lambda w: {}, {"GET": SIGNED_IN}),
    "api_daily_cost_list": (lambda w: {}, {"GET": SIGNED_IN}),
    "api_invoice_list": (lambda w: {}, {"GET": SIGNED_IN}),
    "api_invoice_detail": (lambda w: {"pk": w.invoice.pk}, {"GET": TEAM_ONLY}),
    "api_alert_list": (lambda w: {}, {"GET": SIGNED_IN}),
    # Anyone who sees the alert acknowledges it, as on its page: a note is needed.
    "api_alert_acknowledge": (
        lambda w: {"pk": w.alert.pk},
        {"POST": EVERY_ONE_WHO_SEES},
    ),
    # Everyone has a monthly report: of their own teams (tests/reports/test_api.py).
    # The interactive docs (the schema itself, /api/schema/: test_permissions.py).
    "api_docs": (lambda w: {}, {"GET": SIGNED_IN}),
    "api_monthly_report": (lambda w: {"month": date(2026, 1, 1)}, {"GET": SIGNED_IN}),
}


@pytest.fixture(autouse=True)
def february(time_machine):
    """The world's January 2026 report exists once January ended."""
    time_machine.move_to(datetime(2026, 2, 10, 12, tzinfo=UTC), tick=False)


def api_endpoints(resolver=None):
    """(name, method) of every `api_*` URL pattern and each method its view answers."""
    for pattern in (resolver or get_resolver()).url_patterns:
        if isinstance(pattern, URLResolver):
            yield from api_endpoints(pattern)
        elif isinstance(pattern, URLPattern) and (pattern.name or "").startswith(
            "api_"
        ):
            view = pattern.callback.cls
            for method in view().allowed_methods:
                if method not in ("OPTIONS", "HEAD"):
                    yield pattern.name, method


def test_every_endpoint_and_method_has_a_rule():
    found = set(api_endpoints())
    ruled = {
        (name, method) for name, (_, rules) in ENDPOINTS.items() for method in rules
    }
    assert found == ruled, (
        f"without a rule: {sorted(found - ruled)}; stale rules: {sorted(ruled - found)}"
    )


CASES = [
    (name, method) for name, (_, rules) in sorted(ENDPOINTS.items()) for method in rules
]


@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize(("name", "method"), CASES)
def test_each_persona_gets_the_expected_answer(client, world, name, method, persona):
    kwargs, rules = ENDPOINTS[name]
    if persona != "anonymous":
        client.force_login(getattr(world, persona))
    url = reverse(name, kwargs=kwargs(world))
    response = client.generic(method, url, "{}", content_type="application/json")
    assert response.status_code == rules[method][persona], response.content[:300]
