"""The cost explorer: filters and groupings against sums computed by hand, the rollup
and the cost records agreeing, currencies without a rate apart, who sees what, the
exports, and links from the portal's figures that lead to the same figures."""

import csv
import io
import re
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from urllib.parse import parse_qs

import pytest
from django.urls import reverse

from billing.explorer import ExplorerQuery, explore, explorer_url
from billing.models import FxRate
from billing.services import daily_costs_rebuild
from core.exports import spreadsheet_safe
from tests.conftest import make_cost_record, make_run, make_spend

pytestmark = pytest.mark.django_db

JANUARY = {"start": "2026-01-01", "end": "2026-01-31"}


@pytest.fixture(autouse=True)
def end_of_january(time_machine):
    time_machine.move_to(datetime(2026, 1, 31, 12, tzinfo=UTC), tick=False)


def table(client, **params) -> dict[tuple[str, str], tuple[Decimal, int]]:
    """The explorer's CSV as {(group, currency): (amount, cost lines)}."""
    response = client.get(reverse("cost_explorer_csv"), params)
    assert response.status_code == 200, response.getvalue()
    rows = list(csv.reader(io.StringIO(response.getvalue().decode())))
    return {
        (row[0], row[3]): (Decimal(row[2]), int(row[5]))
        for row in rows[1:]  # the header first
    }


def records_csv(client, **params) -> list[dict[str, str]]:
    response = client.get(reverse("cost_records_csv"), params)
    assert response.status_code == 200
    return list(csv.DictReader(io.StringIO(response.getvalue().decode())))


def test_grouping_by_service_sums_each_service_inside_the_range_only(client, world):
    make_spend(world.project, date(2026, 1, 3), "10.25", service_name="Amazon EC2")
    make_spend(world.project, date(2026, 1, 4), "5.50", service_name="Amazon EC2")
    make_spend(world.project, date(2026, 1, 31), "2.00", service_name="Amazon S3")
    make_spend(world.project, date(2025, 12, 31), "100", service_name="Amazon EC2")
    make_spend(world.project, date(2026, 2, 1), "100", service_name="Amazon EC2")
    client.force_login(world.finance)
    assert table(client, group_by="service", **JANUARY) == {
        ("Amazon EC2", "USD"): (Decimal("15.75"), 2),
        ("Amazon S3", "USD"): (Decimal("2.00"), 1),
    }


def test_the_default_range_is_this_month_to_date(client, world):
    make_spend(world.project, date(2025, 12, 31), "100")
    make_spend(world.project, date(2026, 1, 1), "7")
    make_spend(world.project, date(2026, 1, 31), "8")
    client.force_login(world.lead)
    response = client.get(reverse("cost_explorer"))
    result = response.context["result"]
    assert (result.query.start, result.query.end) == (
        date(2026, 1, 1),
        date(2026, 1, 31),
    )
    assert result.total == Decimal("15")
    assert "both days included" in response.content.decode()


def test_each_filter_keeps_only_its_costs(client, world):
    run = world.run
    other = make_run(world.project, name="Eval run", external_id="eval")
    day = date(2026, 1, 10)
    make_spend(world.project, day, "1", training_run=run, provider_name="AWS")
    make_spend(world.project, day, "2", training_run=other, provider_name="AWS")
    make_spend(world.project, day, "4", provider_name="Lambda", charge_category="Tax")
    make_spend(world.project, day, "8", service_category="Storage")
    make_spend(world.project, day, "16", is_provisional=True, service_name="")
    make_spend(world.other_project, day, "32")
    client.force_login(world.finance)

    def total(**filters) -> Decimal:
        return sum(
            (amount for amount, _ in table(client, **JANUARY, **filters).values()),
            Decimal(0),
        )

    assert total() == Decimal("63")
    assert total(team="foundation") == Decimal("31")
    assert total(team="other") == Decimal("32")
    assert total(project="llama-sft") == Decimal("31")
    assert total(run=str(run.pk)) == Decimal("1")
    assert total(project="llama-sft", run="(none)") == Decimal("28")
    assert total(provider="Lambda") == Decimal("4")
    assert total(charge_category="Tax") == Decimal("4")
    assert total(service_category="Storage") == Decimal("8")
    assert total(provisional="yes") == Decimal("16")
    assert total(provisional="no") == Decimal("47")
    assert total(service="(none)") == Decimal("16")
    assert total(source=str(world.source.pk)) == Decimal("0")  # not its export


def test_the_measure_chooses_which_cost_is_summed(client, world):
    make_spend(
        world.project,
        date(2026, 1, 5),
        "10",
        billed_cost=Decimal("12"),
        list_cost=Decimal("15"),
        contracted_cost=Decimal("11"),
    )
    client.force_login(world.lead)
    expected = {"effective": "10", "billed": "12", "list": "15", "contracted": "11"}
    for measure, amount in expected.items():
        rows = table(client, measure=measure, group_by="project", **JANUARY)
        assert rows == {("Llama Sft", "USD"): (Decimal(amount), 1)}


def test_grouping_by_a_tag_reads_the_records_and_keeps_untagged_costs(client, world):
    day = date(2026, 1, 12)
    make_spend(world.project, day, "3.5", tags={"team": "research"})
    make_spend(world.project, day, "1.25", tags={"team": "research", "env": "dev"})
    make_spend(world.project, day, "2", tags={"team": "infra"})
    make_spend(world.project, day, "0.75", tags={})
    client.force_login(world.lead)
    assert table(client, group_by="tag:team", **JANUARY) == {
        ("research", "USD"): (Decimal("4.75"), 2),
        ("infra", "USD"): (Decimal("2"), 1),
        ("(no team tag)", "USD"): (Decimal("0.75"), 1),
    }
    assert table(client, group_by="tag:team", tag="env=dev", **JANUARY) == {
        ("research", "USD"): (Decimal("1.25"), 1),
    }
    untagged = table(client, group_by="project", tag="team=(none)", **JANUARY)
    assert untagged == {("Llama Sft", "USD"): (Decimal("0.75"), 1)}


def test_grouping_by_region_reads_the_records_and_adds_up_to_the_rollup(client, world):
    day = date(2026, 1, 20)
    make_spend(world.project, day, "6.10", region_id="us-east-1")
    make_spend(world.project, day + timedelta(days=1), "3.90", region_id="us-east-1")
    make_spend(world.project, day, "5", region_id="eu-west-1")
    make_spend(world.project, day, "1", region_id="")
    client.force_login(world.lead)
    by_region = table(client, group_by="region", **JANUARY)
    assert by_region == {
        ("us-east-1", "USD"): (Decimal("10.00"), 2),
        ("eu-west-1", "USD"): (Decimal("5"), 1),
        ("(no region)", "USD"): (Decimal("1"), 1),
    }
    by_service = table(client, group_by="service", **JANUARY)
    assert sum(a for a, _ in by_region.values()) == sum(
        a for a, _ in by_service.values()
    )
    eu_only = table(client, group_by="service", region="eu-west-1", **JANUARY)
    assert eu_only == {("Amazon EC2", "USD"): (Decimal("5"), 1)}


def test_a_currency_without_a_rate_is_shown_apart_and_never_added(client, world):
    FxRate.objects.create(currency="EUR", date=date(2026, 1, 1), rate=Decimal("1.10"))
    day = date(2026, 1, 15)
    make_spend(world.project, day, "20", region_id="eu-west-1")
    make_spend(world.project, day, "10", billing_currency="EUR", region_id="eu-west-1")
    make_spend(world.project, day, "1000", billing_currency="JPY", region_id="jp-1")
    client.force_login(world.finance)
    for group_by, labels in [
        ("project", ("Llama Sft",) * 2),
        ("region", ("eu-west-1", "jp-1")),
    ]:
        rows = table(client, group_by=group_by, **JANUARY)
        assert rows == {
            (labels[0], "USD"): (Decimal("31.00"), 2),  # 20 + 10 EUR at 1.10
            (labels[1], "JPY"): (Decimal("1000"), 1),
        }
    response = client.get(reverse("cost_explorer"), {"group_by": "region"})
    assert response.context["result"].total == Decimal("31.00")
    assert 'data-testid="unconverted"' in response.content.decode()


def test_the_records_count_a_long_charge_as_the_rollup_spreads_it(client, world):
    """A ten-day charge from 30 January: two tenths of it fall in January."""
    start = datetime(2026, 1, 30, tzinfo=UTC)
    make_cost_record(
        date(2026, 1, 30),
        "10",
        project=world.project,
        region_id="us-east-1",
        charge_period_end=start + timedelta(days=10),
    )
    daily_costs_rebuild(start=date(2026, 1, 1), end=date(2026, 3, 1))
    client.force_login(world.lead)
    by_region = table(client, group_by="region", **JANUARY)
    by_service = table(client, group_by="service", **JANUARY)
    assert by_region == {("us-east-1", "USD"): (Decimal("2"), 1)}
    assert by_service == {("Amazon EC2", "USD"): (Decimal("2"), 1)}
    february = {"start": "2026-02-01", "end": "2026-02-28"}
    assert table(client, group_by="region", **february) == {
        ("us-east-1", "USD"): (Decimal("8"), 0)  # counted once, on its first day
    }
    assert len(records_csv(client, **february)) == 1  # the record behind the 8


def test_the_chart_has_a_bar_per_day_for_the_largest_groups(world):
    make_spend(world.project, date(2026, 1, 2), "3", service_name="A")
    make_spend(world.project, date(2026, 1, 3), "4", service_name="A")
    make_spend(world.project, date(2026, 1, 3), "1", service_name="B")
    query = ExplorerQuery(start=date(2026, 1, 1), end=date(2026, 1, 3))
    result = explore(user=world.finance, query=query)
    assert result.buckets == [date(2026, 1, day) for day in (1, 2, 3)]
    assert result.series == [
        ("A", [Decimal(0), Decimal("3"), Decimal("4")]),
        ("B", [Decimal(0), Decimal(0), Decimal("1")]),
    ]
    monthly = explore(user=world.finance, query=replace(query, grain="month"))
    assert monthly.series == [("A", [Decimal("7")]), ("B", [Decimal("1")])]


def test_an_outsider_gets_nothing_of_another_team(client, world):
    make_spend(world.project, date(2026, 1, 5), "500", region_id="us-east-1")
    make_spend(world.other_project, date(2026, 1, 5), "7", region_id="us-east-1")
    client.force_login(world.outsider)
    for group_by in ("project", "region", "tag:team"):
        rows = table(client, group_by=group_by, **JANUARY)
        assert sum(amount for amount, _ in rows.values()) == Decimal("7")
    assert [r["Project"] for r in records_csv(client, **JANUARY)] == ["secret-pretrain"]
    asked = client.get(reverse("cost_explorer"), {"project": world.project.slug})
    assert asked.status_code == 400
    assert "No project “llama-sft” that you can see." in asked.content.decode()
    assert "$500" not in asked.content.decode()


def test_a_member_does_not_see_unallocated_spend(client, world):
    make_spend(world.project, date(2026, 1, 5), "10")
    make_spend(None, date(2026, 1, 5), "90", region_id="us-east-1")
    client.force_login(world.member)
    assert table(client, group_by="project", **JANUARY) == {
        ("Llama Sft", "USD"): (Decimal("10"), 1)
    }
    by_region = table(client, group_by="region", **JANUARY)
    assert ("us-east-1", "USD") not in by_region
    assert len(records_csv(client, **JANUARY)) == 1
    refused = client.get(reverse("cost_explorer"), {"project": "(none)"})
    assert refused.status_code == 400
    assert "shown to finance and admins only" in refused.content.decode()
    client.force_login(world.finance)
    assert table(client, group_by="project", **JANUARY) == {
        ("Unallocated", "USD"): (Decimal("90"), 1),
        ("Llama Sft", "USD"): (Decimal("10"), 1),
    }


def test_the_exports_escape_cells_a_spreadsheet_would_run(client, world):
    formula = '=HYPERLINK("http://evil.example","x")'
    make_spend(world.project, date(2026, 1, 8), "-5", service_name=formula)
    make_spend(world.project, date(2026, 1, 8), "1", resource_id="+cmd|' /C calc'!A0")
    client.force_login(world.lead)
    rows = table(client, group_by="service", **JANUARY)
    assert rows[("'" + formula, "USD")] == (Decimal("-5"), 1)  # the amount a number
    records = records_csv(client, **JANUARY)
    assert {r["Service"] for r in records} == {"'" + formula, "Amazon EC2"}
    assert "'+cmd|' /C calc'!A0" in {r["Resource id"] for r in records}


@pytest.mark.parametrize(
    "text,safe",
    [
        ("=1+2", "'=1+2"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("Amazon EC2", "Amazon EC2"),
        (Decimal("-1.5"), Decimal("-1.5")),
    ],
)
def test_spreadsheet_safe_quotes_only_text_that_starts_a_formula(text, safe):
    assert spreadsheet_safe(text) == safe


@pytest.mark.parametrize(
    "params,message",
    [
        ({"start": "2026-13-01"}, "Enter a valid date."),
        (
            {"start": "2026-01-20", "end": "2026-01-10"},
            "The range ends before it starts.",
        ),
        (
            {"start": "2024-01-01", "end": "2026-01-01"},
            "A range covers at most 24 months",
        ),
        (
            {"start": "2025-09-01", "end": "2026-01-01", "grain": "day"},
            "Daily bars cover at most 92 days",
        ),
        ({"measure": "gross"}, "Select a valid choice. gross is not one"),
        ({"group_by": "colour"}, "Select a valid choice. colour is not one"),
        ({"group_by": "tag"}, "Name the tag key to group by."),
        ({"tag": "team"}, "Write a tag filter as key=value"),
        ({"run": "abc"}, "No training run “abc” that you can see."),
        ({"team": "nobody"}, "No team “nobody” that you can see."),
    ],
)
def test_bad_filters_answer_400_with_the_reason(client, world, params, message):
    client.force_login(world.lead)
    for name in (
        "cost_explorer",
        "cost_records",
        "cost_explorer_csv",
        "cost_records_csv",
    ):
        response = client.get(reverse(name), params)
        assert response.status_code == 400
        assert message in response.content.decode()


def test_the_records_page_lists_the_filtered_records_fifty_a_page(client, world):
    for day in range(1, 31):
        make_cost_record(date(2026, 1, day), "1", project=world.project)
        make_cost_record(
            date(2026, 1, day), "2", project=world.project, is_provisional=True
        )
    make_cost_record(date(2026, 1, 5), "9", project=world.project, service_name="S3")
    client.force_login(world.finance)
    params = {**JANUARY, "service": "Amazon EC2"}
    first = client.get(reverse("cost_records"), params)
    second = client.get(reverse("cost_records"), {**params, "page": 2})
    assert first.context["page"].paginator.count == 60
    assert len(first.context["records"]) == 50
    assert len(second.context["records"]) == 10
    assert "provisional" in first.content.decode()
    listed = [
        record for record, _ in [*first.context["records"], *second.context["records"]]
    ]
    assert {record.service_name for record in listed} == {"Amazon EC2"}


def test_a_group_links_to_its_records_and_a_narrower_question(client, world):
    make_spend(world.project, date(2026, 1, 5), "4", service_name="Amazon S3")
    make_spend(None, date(2026, 1, 5), "6", service_name="Amazon S3")
    client.force_login(world.finance)
    response = client.get(reverse("cost_explorer"), {"group_by": "project", **JANUARY})
    rows = {item["row"].label: item for item in response.context["rows"]}
    unallocated = client.get(rows["Unallocated"]["records"])
    assert [amount for _, amount in unallocated.context["records"]] == [Decimal("6")]
    drilled = client.get(rows["Llama Sft"]["drill"])
    assert drilled.context["query"].group_by == "service"
    assert drilled.context["result"].total == Decimal("4")


def test_explorer_url_writes_the_filters_of_a_figure(world):
    url = explorer_url(
        project=world.project,
        run=world.run,
        month=date(2026, 2, 14),
        measure="billed_cost",
        tag={"team": "research"},
        service="",  # a missing template variable is no filter
    )
    path, query = url.split("?")
    assert path == reverse("cost_explorer")
    assert parse_qs(query) == {
        "start": ["2026-02-01"],
        "end": ["2026-02-28"],
        "project": ["llama-sft"],
        "run": [str(world.run.pk)],
        "measure": ["billed"],
        "tag": ["team=research"],
    }
    assert explorer_url(records=True, project="(none)").startswith(
        reverse("cost_records") + "?project=%28none%29"
    )


def linked_total(client, page: str, testid: str) -> Decimal:
    """Follow the link of a figure on a page; the total the explorer shows."""
    link = re.search(rf'href="([^"]+)"[^>]*data-testid="{testid}"', page)
    assert link, f"no link {testid}"
    response = client.get(link.group(1).replace("&amp;", "&"))
    assert response.status_code == 200
    return response.context["result"].total


def test_the_figures_of_the_portal_lead_to_the_same_figures_in_the_explorer(
    client, world
):
    make_spend(world.project, date(2025, 12, 20), "300")
    make_spend(world.project, date(2026, 1, 10), "45.50")
    make_spend(world.project, date(2026, 1, 30), "4.50", is_provisional=True)
    make_spend(None, date(2026, 1, 11), "12")
    client.force_login(world.finance)

    project = client.get(reverse("project_detail", args=[world.project.slug]))
    assert project.context["summary"].variance.actual_to_date == Decimal("350")
    assert linked_total(client, project.content.decode(), "actual-link") == 350

    dashboard = client.get(reverse("dashboard")).content.decode()
    assert linked_total(client, dashboard, "unallocated-link") == 12

    overview = client.get(reverse("overview"))
    assert overview.context["month_total"] == Decimal("62")
    assert linked_total(client, overview.content.decode(), "month-total-link") == 62
    month_link = explorer_url(
        project=world.project, month=date(2026, 1, 1), measure="effective_cost"
    )
    assert month_link.replace("&", "&amp;") in project.content.decode()


def test_the_explorer_page_draws_money_as_decimal_strings(client, world):
    make_spend(world.project, date(2026, 1, 2), "1234.567")
    client.force_login(world.lead)
    response = client.get(reverse("cost_explorer"))
    chart = response.context["chart"]
    assert chart["series"] == [
        {"label": "Amazon EC2", "data": ["0.00", "1234.57"] + ["0.00"] * 29}
    ]
    assert 'id="explorer-chart"' in response.content.decode()
