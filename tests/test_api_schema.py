"""The OpenAPI schema: generated without a warning, and true of the live API.

Schemathesis reads the schema a live server serves, generates requests for every GET
operation of the API from it (a few examples each, to keep the suite's time), and sends
them as finance to that server over a seeded database: no answer may be a 5xx, and
every answer the schema describes must match it.
"""

from datetime import UTC, date, datetime

import pytest
import schemathesis
from django.conf import settings
from django.core.management import call_command
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from budgets.alerts.lifecycle import alert_acknowledge
from tests.conftest import make_cost_record, make_spend

EXAMPLES = 10  # per operation: about 25 operations in well under a minute


def test_the_schema_generates_without_a_warning(tmp_path):
    call_command(
        "spectacular",
        "--validate",
        "--fail-on-warn",
        "--file",
        str(tmp_path / "schema.yaml"),
    )


@pytest.fixture
def seeded(world, time_machine):
    """The world with spend of every kind: allocated to a run, to a project,
    unallocated, in another currency; and an acknowledged alert."""
    time_machine.move_to(datetime(2026, 2, 10, 12, tzinfo=UTC), tick=False)
    make_spend(world.project, date(2026, 1, 5), "120.50", training_run=world.run)
    make_spend(world.other_project, date(2026, 1, 6), "80.25", region_id="eu-west-1")
    make_spend(None, date(2026, 2, 1), "9.75", tags={"team": "research"})
    make_cost_record(
        date(2026, 2, 2), "3.5", project=world.project, billing_currency="EUR"
    )
    alert_acknowledge(alert=world.alert, user=world.lead, note="On it")
    return world


@pytest.fixture
def finance_session(client, seeded) -> dict[str, str]:
    client.force_login(seeded.finance)
    cookie = settings.SESSION_COOKIE_NAME
    return {"Cookie": f"{cookie}={client.cookies[cookie].value}"}


def get_operations(url: str, headers: dict[str, str]) -> list:
    """The API's GET operations, as the schema a live server serves describes them."""
    schema = schemathesis.openapi.from_url(
        f"{url}/api/schema/?format=json", headers=headers
    )
    schema = schema.include(method="GET", path_regex="^/api/v1/")
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.usefixtures("transactional_db")
def test_every_get_endpoint_answers_as_its_schema_says(live_server, finance_session):
    operations = get_operations(live_server.url, finance_session)
    assert len(operations) >= 20

    for operation in operations:

        @given(case=operation.as_strategy())
        @hypothesis_settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def answers_as_its_schema_says(case):
            response = case.call(headers=finance_session)
            case.validate_response(
                response, checks=[not_a_server_error, response_schema_conformance]
            )

        answers_as_its_schema_says()
