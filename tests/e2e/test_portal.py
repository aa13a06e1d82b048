"""The portal in a real browser: headless Chromium against pytest-django's live server.

Each test seeds the demo organisation (`spendtracker.demo.demo_seed`) into a
transactional database that the live server thread reads, logs in through the login
form, and checks what a person sees, including that Chart.js really drew the
cumulative chart. Screenshots of the pages land in `test-artifacts/` at the repository
root.
"""

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
from celery.contrib.testing.worker import start_worker
from django.conf import settings
from django.core.management import call_command
from django.db.models import Sum
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from billing.invoices import SOURCE_NAME as INVOICES
from billing.models import CostRecord
from reports.models import MonthClose
from spendtracker.celery import app
from spendtracker.demo import DEMO_PASSWORD, demo_seed
from tests.accounts.test_permissions import PAGES
from tests.data import FOCUS_REAL

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
ATLAS = "atlas-13b-pretraining"
ATLAS_NAME = "Atlas-13B pre-training"


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module.

    Playwright's sync API keeps an asyncio loop marked as running in this thread for
    as long as it is open, and Django refuses ORM calls from a thread with a running
    loop. The variable is set for the browser's whole life, so it also covers the
    database flush that tears down each transactional test while the loop is open.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(
                executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
            )
            try:
                yield chromium
            finally:
                chromium.close()


@pytest.fixture
def demo(browser, transactional_db, live_server, time_machine):
    # The demo is seeded around today and the live server reads the date: the clock
    # starts at a fixed noon (and runs on), so that no day or month turns mid-test.
    time_machine.move_to(datetime(2026, 12, 15, 12, tzinfo=UTC))
    return demo_seed(today=timezone.now().date())


@pytest.fixture
def js_errors() -> list[str]:
    """Uncaught JavaScript errors of the page, such as a chart script that throws."""
    return []


# Every page reports what the Content-Security-Policy blocked (an inline script, a style
# attribute, a resource from elsewhere) to the console, where the contexts collect it.
CSP_REPORTER = """
document.addEventListener("securitypolicyviolation", (event) => console.error(
  `CSP violation: ${event.violatedDirective} blocked ${event.blockedURI || "inline"}` +
  ` at ${event.sourceFile || document.location.href}:${event.lineNumber}`));
"""


def is_csp_violation(text: str) -> bool:
    return text.startswith("CSP violation") or "Content Security Policy" in text


@pytest.fixture
def new_context(browser: Browser):
    """Browser contexts whose pages must not break the Content-Security-Policy: any
    violation on any of their pages fails the test when it ends."""
    violations: list[str] = []

    def new_context() -> BrowserContext:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(15_000)
        context.add_init_script(CSP_REPORTER)
        context.on(
            "console",
            lambda message: (
                is_csp_violation(message.text) and violations.append(message.text)
            ),
        )
        return context

    yield new_context
    assert not violations, "\n".join(["CSP violations:", *violations])


# axe-core, installed from tests/package.json by .ci/run: WCAG 2.1 A and AA checks.
NODE_MODULES = Path(__file__).resolve().parents[2] / ".run/azurite/node_modules"
AXE = NODE_MODULES / "axe-core/axe.min.js"
AXE_RUN = """async () => (await axe.run(document, {runOnly: ["wcag2a", "wcag2aa",
  "wcag21a", "wcag21aa"]})).violations
  .filter((v) => v.impact === "serious" || v.impact === "critical")
  .map((v) => `${v.id} (${v.impact}): ${v.help} at ${v.nodes[0].target.join(" ")}`)"""


# Swagger UI is drawn by drf-spectacular's copy of it: not the portal's markup.
THIRD_PARTY = "/api/docs/"


def accessibility_violations(page: Page) -> list[str]:
    """The serious and critical WCAG 2.1 AA violations axe-core finds on the page.
    Evaluated through the browser's own channel, so the page's CSP does not apply."""
    assert AXE.exists(), f"{AXE} is missing: run .ci/run (npm ci of tests/package.json)"
    if not page.evaluate("() => typeof axe !== 'undefined'"):
        page.evaluate(AXE.read_text())
    return page.evaluate(AXE_RUN)


@pytest.fixture
def page(new_context, demo, js_errors):
    """A page of a new context; the page each test ends on must pass axe-core."""
    context = new_context()
    page = context.new_page()
    page.on("pageerror", lambda exc: js_errors.append(str(exc)))
    try:
        yield page
        if page.url.startswith("http") and THIRD_PARTY not in page.url:
            violations = accessibility_violations(page)
            assert not violations, f"{page.url}: " + "; ".join(violations)
    finally:
        context.close()


def log_in(page: Page, base_url: str, email: str, password: str) -> None:
    page.goto(f"{base_url}/accounts/login/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state()


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)


def test_a_lead_logs_in_sees_atlas_flagged_over_budget_and_its_chart(
    page: Page, live_server, js_errors
):
    log_in(page, live_server.url, "lead@example.com", DEMO_PASSWORD)

    expect(page).to_have_url(f"{live_server.url}/")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Lena")
    card = page.locator(f'article[data-project="{ATLAS}"]')
    expect(card).to_have_attribute("data-status", "over")
    expect(card.locator(".title span.badge")).to_have_text("Over")
    expect(card.locator(".reason")).to_contain_text("over budget")
    screenshot(page, "dashboard-lead")

    card.get_by_role("link", name=ATLAS_NAME).click()

    expect(page).to_have_url(f"{live_server.url}/projects/{ATLAS}/")
    expect(page.get_by_role("heading", level=1)).to_contain_text(ATLAS_NAME)
    expect(page.get_by_test_id("status-reason")).to_contain_text("over budget")
    expect(page.get_by_role("link", name="Edit plan")).to_be_visible()
    canvas = page.locator("canvas#cumulative-chart")
    expect(canvas).to_be_visible()
    box = canvas.bounding_box()
    assert box is not None
    assert box["width"] > 0
    assert box["height"] > 0
    chart = canvas.evaluate(
        """(canvas) => {
            const chart = Chart.getChart(canvas);
            return chart && {
                datasets: chart.data.datasets.length,
                labels: chart.data.labels.length,
                width: chart.width,
                height: chart.height,
            };
        }"""
    )
    assert chart is not None, "Chart.js did not draw on canvas#cumulative-chart"
    assert chart["datasets"] == 2
    assert chart["labels"] > 0
    assert chart["width"] > 0
    assert chart["height"] > 0
    screenshot(page, "project-atlas-lead")
    assert js_errors == []


def test_a_team_member_sees_the_over_budget_project_without_an_edit_plan_button(
    page: Page, live_server, js_errors
):
    log_in(page, live_server.url, "member@example.com", DEMO_PASSWORD)
    expect(page).to_have_url(f"{live_server.url}/")

    page.goto(f"{live_server.url}/projects/{ATLAS}/")

    expect(page.get_by_role("heading", level=1)).to_contain_text(ATLAS_NAME)
    heading = page.get_by_role("heading", level=1)
    expect(heading.locator("span.badge")).to_have_text("Over")
    expect(page.get_by_role("link", name="Edit plan")).to_have_count(0)
    expect(page.locator(f'a[href="/projects/{ATLAS}/plan/"]')).to_have_count(0)
    assert js_errors == []


def test_every_page_carries_the_portals_icon(page: Page, live_server):
    page.goto(f"{live_server.url}/accounts/login/")
    href = page.locator('link[rel="icon"]').get_attribute("href")
    assert href
    icon = page.request.get(f"{live_server.url}{href}")
    assert icon.status == 200
    assert icon.headers["content-type"].startswith("image/svg+xml")
    assert b"<svg" in icon.body()


def test_a_wrong_password_shows_an_error_and_stays_on_the_login_page(
    page: Page, live_server
):
    login_url = f"{live_server.url}/accounts/login/"

    log_in(page, live_server.url, "lead@example.com", "not-the-password")

    expect(page).to_have_url(login_url)
    expect(page.locator("div.nonfield")).to_contain_text(
        re.compile("correct email address and password", re.IGNORECASE)
    )
    expect(page.get_by_label("Email")).to_have_value("lead@example.com")
    expect(page.get_by_label("Password")).to_have_value("")
    expect(page.get_by_role("button", name="Log in")).to_be_visible()


SAMPLE = FOCUS_REAL


@pytest.fixture
def tasks_in_process(settings, tmp_path, eager_tasks):
    """The upload's import runs in the live server's thread, with uploads kept in a
    temporary folder."""
    settings.MEDIA_ROOT = tmp_path


def test_finance_uploads_to_a_new_source_then_to_it_chosen_from_the_list(
    page: Page, live_server, js_errors, tasks_in_process
):
    log_in(page, live_server.url, "finance@example.com", DEMO_PASSWORD)
    page.goto(f"{live_server.url}/billing/upload/")
    new_name = page.get_by_label("Name of the new source")
    expect(new_name).to_be_hidden()
    page.get_by_label("Files").set_input_files(SAMPLE)
    page.get_by_label("Source", exact=True).select_option(label="A new source…")
    expect(new_name).to_be_visible()
    # A name already taken, in other letters, is refused: no second source of it.
    new_name.fill("demo focus EXPORT")
    page.get_by_label("Kind of the new source").select_option(label="FOCUS export")
    page.get_by_role("button", name="Upload and import").click()
    expect(page.get_by_role("alert")).to_contain_text(
        "Name of the new source: A source named “Demo FOCUS export” exists already: "
        "choose it from the list."
    )
    new_name.fill("AWS FOCUS")
    page.get_by_role("button", name="Upload and import").click()

    page.wait_for_url(re.compile(r"/billing/imports/\d+/$"))
    expect(page.get_by_role("heading", level=1)).to_contain_text("Imported")
    expect(page.locator("main")).to_contain_text("20.52022672899 USD")
    expect(page.get_by_test_id("months-without-budget")).to_contain_text(
        "September 2024, October 2024"
    )
    expect(page.get_by_test_id("import-destinations")).to_contain_text("Unallocated")
    screenshot(page, "import-finance")

    # The source's page uploads to it: chosen in the list, nothing to type.
    page.get_by_role("link", name="AWS FOCUS", exact=True).click()
    page.get_by_role("link", name="Upload an export").click()
    expect(page.get_by_label("Source", exact=True)).to_have_value(re.compile(r"^\d+$"))
    expect(
        page.get_by_label("Source", exact=True).locator("option:checked")
    ).to_have_text("AWS FOCUS")
    expect(page.get_by_label("Name of the new source")).to_be_hidden()
    page.get_by_label("Files").set_input_files(SAMPLE)
    page.get_by_role("button", name="Upload and import").click()
    page.wait_for_url(re.compile(r"/billing/imports/\d+/$"))
    expect(page.get_by_role("heading", level=1)).to_contain_text("Unchanged")
    assert js_errors == []


def test_an_admin_adds_a_source_and_is_told_when_its_first_data_comes(
    page: Page, live_server, js_errors
):
    log_in(page, live_server.url, "admin@example.com", DEMO_PASSWORD)
    page.goto(f"{live_server.url}/billing/sources/")
    page.get_by_role("link", name="Add a source").click()
    page.get_by_label("Name").fill("OpenAI org")
    page.get_by_label("Kind").select_option(label="OpenAI costs")
    page.get_by_label("Sync every minutes").fill("60")
    page.get_by_role("button", name="Add the source").click()

    page.wait_for_url(re.compile(r"/billing/sources/\d+/$"))
    expect(page.locator("main")).to_contain_text(
        "The source “OpenAI org” was added. The first sync runs within 15 minutes, "
        "then every 60 minutes."
    )
    expect(page.get_by_test_id("connection-test")).to_contain_text("Not tested yet.")
    expect(page.get_by_role("button", name="Test the connection")).to_be_visible()
    assert js_errors == []


def test_an_upload_while_the_queue_is_down_says_it_is_queued_for_its_return(
    page: Page, live_server, js_errors, settings, tmp_path, queue_down
):
    settings.MEDIA_ROOT = tmp_path
    log_in(page, live_server.url, "finance@example.com", DEMO_PASSWORD)
    page.goto(f"{live_server.url}/billing/upload/")
    page.get_by_label("Files").set_input_files(SAMPLE)
    page.get_by_label("Source", exact=True).select_option(label="Demo FOCUS export")
    page.get_by_role("button", name="Upload and import").click()

    label = page.locator("#progress-label")
    expect(label).to_contain_text("Queued for import when the queue is back")
    page.wait_for_timeout(1500)  # a poll of the status page: still queued, still here
    expect(label).to_contain_text("Queued for import when the queue is back")
    expect(page.locator("#upload-error")).to_be_hidden()
    screenshot(page, "upload-queued")
    page.goto(f"{live_server.url}/billing/imports/")
    latest = page.locator("tbody tr").first
    expect(latest).to_contain_text("Queued")
    latest.locator("a").first.click()
    expect(page.get_by_test_id("import-queued")).to_contain_text(
        "the import starts within minutes of the queue's return"
    )
    assert js_errors == []


def test_a_lead_acknowledges_an_alert_and_the_project_shows_the_note(
    page: Page, live_server, js_errors
):
    log_in(page, live_server.url, "lead@example.com", DEMO_PASSWORD)
    expect(page.get_by_test_id("nav-alert-count")).to_be_visible()
    page.get_by_role("link", name=re.compile("^Alerts")).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Alerts")
    table = page.get_by_test_id("alert-table")
    expect(table).to_contain_text(ATLAS_NAME)
    screenshot(page, "alerts-lead")

    page.get_by_label("Project").select_option(ATLAS)
    page.get_by_role("button", name="Filter").click()
    first = page.get_by_test_id("alert-table").locator("tbody tr").first
    subject = first.locator("a").first.inner_text()
    first.locator("a").first.click()
    expect(page.get_by_role("heading", level=1)).to_have_text(subject)
    page.get_by_label("Note").fill("Paused the ablation sweep until Monday.")
    page.get_by_role("button", name="Acknowledge").click()
    expect(page.locator(".messages")).to_contain_text("Alert acknowledged")
    screenshot(page, "alert-acknowledged")

    page.goto(f"{live_server.url}/projects/{ATLAS}/")
    expect(page.get_by_test_id("project-alerts")).to_contain_text(
        "Paused the ablation sweep until Monday."
    )
    screenshot(page, "project-atlas-alerts")

    page.get_by_role("link", name="Alert rules").click()
    rules = page.get_by_test_id("alert-rules")
    rules.locator('input[name="budget_used-thresholds"]').fill("90, 110")
    page.get_by_role("button", name="Save alert rules").click()
    expect(page.locator(".messages")).to_contain_text("Alert rules saved")
    expect(rules.locator('input[name="budget_used-thresholds"]')).to_have_value(
        "90, 110"
    )
    screenshot(page, "alert-rules")
    assert js_errors == []


def test_a_lead_previews_a_plan_change_and_finance_approves_the_revision(
    new_context, page: Page, live_server, js_errors
):
    log_in(page, live_server.url, "lead@example.com", DEMO_PASSWORD)
    page.goto(f"{live_server.url}/projects/{ATLAS}/plan/")
    total = page.get_by_label("Total", exact=True)
    new_total = str(int(float(total.input_value())) + 100_000)
    total.fill(new_total)
    page.get_by_label("Lines must sum to total").uncheck()
    page.get_by_role("button", name="Preview the effect").click()
    preview = page.get_by_test_id("plan-preview")
    expect(preview).to_be_visible()
    expect(preview).to_contain_text("Nothing is saved yet")
    screenshot(page, "plan-preview")
    page.get_by_role("button", name="Propose the revision").click()
    expect(page.locator(".messages")).to_contain_text("revision of the approved plan")
    expect(page.get_by_test_id("pending-revision")).to_be_visible()

    context = new_context()
    finance = context.new_page()
    try:
        log_in(finance, live_server.url, "finance@example.com", DEMO_PASSWORD)
        finance.goto(f"{live_server.url}/projects/{ATLAS}/")
        finance.get_by_test_id("pending-revision").get_by_role("link").click()
        expect(finance.get_by_test_id("revision-changes")).to_contain_text("Total")
        screenshot(finance, "revision-finance")
        finance.get_by_label("Comment").fill("Approved with the Q4 re-forecast.")
        finance.get_by_role("button", name="Approve the revision").click()
        expect(finance.locator(".messages")).to_contain_text("Revision approved")
        expect(finance.get_by_test_id("revisions")).to_contain_text(
            "Approved with the Q4 re-forecast."
        )
    finally:
        context.close()
    assert js_errors == []


def test_finance_approves_a_draft_invoice_and_its_cost_is_counted(
    page: Page, live_server, js_errors, tasks_in_process
):
    invoices = CostRecord.objects.filter(source__name=INVOICES)
    before = invoices.aggregate(total=Sum("billed_cost", default=0))["total"]
    log_in(page, live_server.url, "finance@example.com", DEMO_PASSWORD)
    page.goto(f"{live_server.url}/invoices/?status=draft")
    page.get_by_role("link", name="LMB-2107").click()
    expect(page.get_by_test_id("invoice-decision")).to_contain_text(
        "A draft adds no cost until finance approves it."
    )
    page.get_by_role("button", name="Approve").click()

    expect(page.locator(".messages")).to_contain_text(
        "Lambda LMB-2107 is approved: it counts as cost."
    )
    expect(page.get_by_test_id("invoice-status")).to_have_text("Approved")
    expect(page.get_by_test_id("invoice-decision")).to_contain_text(
        "Approved by Fatima Noor on"
    )
    screenshot(page, "invoice-approved")
    after = invoices.aggregate(total=Sum("billed_cost", default=0))["total"]
    assert after - before == Decimal("5654.05")  # 2,795 GPU-hours at $1.99, and $92
    assert js_errors == []


def test_a_run_that_reports_progress_explains_its_earned_value(
    page: Page, live_server, js_errors
):
    log_in(page, live_server.url, "lead@example.com", DEMO_PASSWORD)
    page.goto(f"{live_server.url}/projects/{ATLAS}/")
    page.get_by_role("link", name="atlas-13b-main", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("atlas-13b-main")
    explanation = page.get_by_test_id("ev-explanation")
    expect(explanation).to_contain_text("of planned work (CPI")
    expect(page.get_by_test_id("earned-value")).to_contain_text("SPI")
    screenshot(page, "run-earned-value")
    assert js_errors == []


@pytest.fixture
def worker(demo):
    """A Celery worker in a thread of this process, on the configured broker, so that
    it runs on the test's clock: it does the month close that the page queues. What
    seeding the demo queued on the shared queue is purged first, never the database."""
    app.control.purge()
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        yield


def test_finance_closes_last_month_from_its_report_and_sees_the_snapshot(
    page: Page, live_server, js_errors, worker
):
    last_month = (timezone.now().date().replace(day=1) - timedelta(days=1)).replace(
        day=1
    )
    log_in(page, live_server.url, "finance@example.com", DEMO_PASSWORD)
    page.goto(f"{live_server.url}/reports/{last_month:%Y-%m}/")
    page.get_by_role("link", name="Close month…").click()
    panel = page.get_by_test_id("month-close")
    panel.get_by_label("Reason").fill("Board pack due Monday")
    panel.get_by_role("button", name=re.compile(f"Close {last_month:%B %Y}")).click()

    expect(page.locator(".messages")).to_contain_text(
        f"{last_month:%B %Y} is being closed"
    )
    # The page reloads itself until the worker has closed the month.
    expect(page.get_by_test_id("report-status")).to_have_text("Closed", timeout=90_000)
    history = page.get_by_test_id("close-history")
    expect(history).to_contain_text("Fatima Noor")
    expect(history).to_contain_text("Board pack due Monday")
    expect(page.get_by_test_id("snapshot-checksums")).to_contain_text("PDF")
    expect(page.get_by_text(f"Reopen {last_month:%B %Y}…")).to_be_visible()
    close = MonthClose.objects.get(month=last_month)
    assert close.closed_by.email == "finance@example.com"
    screenshot(page, "month-closed-finance")
    assert js_errors == []


FRESH_ADMIN, FRESH_PASSWORD = "root@acme.example", "correct-horse-battery-staple"
# Every page of the portal's menu, with what its empty state says.
EMPTY_PAGES = [
    ("/", "No projects yet"),
    ("/overview/", "no teams or billing sources yet"),
    ("/reports/", "No month has a plan or spend yet"),
    ("/costs/", "No spend between"),
    ("/alerts/", "Alerts fire when a project's spend leaves its plan"),
    ("/teams/", "No teams yet"),
    ("/billing/sources/", "No billing sources yet"),
    ("/billing/imports/", "No imports yet"),
    ("/invoices/", "No compute invoices"),
]
SCREENSHOTS = {
    "/": "fresh-dashboard",
    "/teams/": "fresh-teams",
    "/costs/": "fresh-costs",
}


@pytest.fixture
def fresh_install(browser, transactional_db, live_server, time_machine, monkeypatch):
    """An empty database set up as an operator does: `manage.py bootstrap`."""
    time_machine.move_to(datetime(2026, 12, 15, 12, tzinfo=UTC))
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", FRESH_PASSWORD)
    call_command(
        "bootstrap",
        "--organisation",
        "Acme AI",
        "--admin-email",
        FRESH_ADMIN,
        stdout=StringIO(),
    )


def test_the_bootstrapped_admin_finds_what_to_do_next_on_every_empty_page(
    new_context, fresh_install, live_server, js_errors
):
    context = new_context()
    page = context.new_page()
    page.on("pageerror", lambda exc: js_errors.append(str(exc)))
    try:
        log_in(page, live_server.url, FRESH_ADMIN, FRESH_PASSWORD)
        expect(page.get_by_test_id("organisation")).to_have_text("Acme AI")
        for path, says in EMPTY_PAGES:
            response = page.goto(f"{live_server.url}{path}")
            assert response is not None and response.status == 200, path
            expect(page.get_by_test_id("empty-state")).to_contain_text(says)
            steps = page.get_by_test_id("next-steps")
            expect(steps).to_contain_text("Connect a billing source")
            expect(steps.get_by_role("link", name="Create a team")).to_have_attribute(
                "href", "/admin/accounts/team/add/"
            )
            if path in SCREENSHOTS:
                screenshot(page, SCREENSHOTS[path])
        page.goto(f"{live_server.url}/")
        page.get_by_test_id("next-steps").get_by_role(
            "link", name="Add a billing source"
        ).click()
        expect(page.get_by_role("heading", level=1)).to_contain_text("billing source")
    finally:
        context.close()
    assert js_errors == []


def test_a_lead_creates_a_project_then_archives_it_when_it_is_finished(
    page: Page, live_server, js_errors
):
    log_in(page, live_server.url, "lead@example.com", DEMO_PASSWORD)
    page.get_by_test_id("new-project").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("New project")
    page.get_by_label("Team").select_option(label="Foundation Models")
    page.get_by_label("Name", exact=True).fill("Whisper eval sweep")
    page.get_by_label("Kind").select_option(label="Evaluation")
    page.get_by_label("Start date").fill("2026-12-01")
    page.get_by_label("End date").fill("2027-01-31")
    page.get_by_label("Owner").select_option(label="Lena Ortiz")
    page.get_by_label("Total", exact=True).fill("5000")
    page.get_by_label("Month 1").fill("2026-12")
    page.get_by_label("Amount 1").fill("2000")
    page.get_by_label("Month 2").fill("2027-01")
    page.get_by_label("Amount 2").fill("3000")
    page.get_by_label("Tag key = value").check()
    page.get_by_label("Tag key", exact=True).fill("eval")
    page.get_by_label("Value", exact=True).fill("whisper")
    screenshot(page, "project-new")
    page.get_by_role("button", name="Create the project").click()

    expect(page).to_have_url(f"{live_server.url}/projects/whisper-eval-sweep/")
    expect(page.locator(".messages")).to_contain_text("waits for finance")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Whisper eval sweep")
    expect(page.get_by_text("tag eval = whisper")).to_be_visible()

    page.get_by_role("button", name="Archive").click()
    expect(page.get_by_test_id("archived-badge")).to_be_visible()
    expect(page.get_by_test_id("archived-notice")).to_contain_text("history")
    screenshot(page, "project-archived")
    page.goto(f"{live_server.url}/")
    cards = page.get_by_test_id("project-cards")
    expect(cards.locator('article[data-project="whisper-eval-sweep"]')).to_have_count(0)
    page.get_by_test_id("show-archived").click()
    archived = page.locator('article[data-project="whisper-eval-sweep"]')
    expect(archived).to_contain_text("Archived")
    assert js_errors == []


def test_the_api_docs_draw_swagger_ui_under_the_content_security_policy(
    page: Page, live_server, js_errors
):
    log_in(page, live_server.url, "lead@example.com", DEMO_PASSWORD)

    response = page.goto(f"{live_server.url}/api/docs/")

    assert response is not None
    assert "script-src 'self'" in response.headers["content-security-policy"]
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Spendtracker API")
    expect(page.locator(".opblock").first).to_be_visible()
    screenshot(page, "api-docs")
    assert js_errors == []


def test_bars_are_drawn_and_a_filter_applies_itself_without_inline_code(
    page: Page, live_server, js_errors
):
    log_in(page, live_server.url, "finance@example.com", DEMO_PASSWORD)
    meter = page.locator(f'article[data-project="{ATLAS}"] .meter > span')
    expect(meter).to_have_attribute("data-width", re.compile(r"^[1-9]"))
    assert meter.evaluate("bar => bar.getBoundingClientRect().width") > 0

    page.goto(f"{live_server.url}/invoices/")
    page.get_by_label("Filter by status").select_option("draft")

    expect(page).to_have_url(re.compile(r"/invoices/\?status=draft$"))
    assert js_errors == []


@pytest.mark.parametrize("persona", ["lead", "admin"])
def test_every_page_a_persona_sees_passes_axe(
    new_context, transactional_db, live_server, world, client, time_machine, persona
):
    """Every page of the portal (the permission table's, so a new page is in it) as
    a lead and as an admin: no serious or critical WCAG 2.1 AA violation."""
    time_machine.move_to(datetime(2026, 2, 10, 12, tzinfo=UTC), tick=False)
    client.force_login(getattr(world, persona))
    context = new_context()
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    cookie = {"name": settings.SESSION_COOKIE_NAME, "value": session}
    context.add_cookies([cookie | {"url": live_server.url}])
    page = context.new_page()
    failures = []
    for name, (kwargs, expected) in sorted(PAGES.items()):
        if expected.get(persona) != 200:
            continue
        url = reverse(name, kwargs=kwargs(world))
        served = client.get(url).headers.get("Content-Type", "")
        if not served.startswith("text/html") or url == THIRD_PARTY:
            continue  # a download, JSON, or Swagger UI
        page.goto(live_server.url + url)
        failures += [f"{url}: {found}" for found in accessibility_violations(page)]
    context.close()
    assert not failures, "\n".join(failures)


def test_a_lead_makes_a_run_reporter_token_copies_it_once_and_revokes_it(
    page: Page, live_server, js_errors
):
    log_in(page, live_server.url, "lead@example.com", DEMO_PASSWORD)
    page.get_by_role("link", name="API tokens").click()
    page.get_by_label("Name").fill("atlas training job")
    page.get_by_label("Run reporter of").select_option(label=ATLAS_NAME)
    page.get_by_role("button", name="Create token").click()

    key = page.get_by_test_id("token-key").inner_text()
    assert key.startswith("spt_")
    page.reload()  # the key is shown once, and a reload makes no second token
    expect(page.get_by_test_id("token-key")).to_have_count(0)
    expect(page.get_by_role("button", name="Revoke")).to_have_count(1)

    page.once("dialog", lambda dialog: dialog.dismiss())
    page.get_by_role("button", name="Revoke").click()
    expect(page.get_by_role("button", name="Revoke")).to_have_count(1)  # kept
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Revoke").click()
    expect(page.get_by_text("is revoked: requests with it get 401")).to_be_visible()
    expect(page.get_by_role("button", name="Revoke")).to_have_count(0)
    assert js_errors == []
