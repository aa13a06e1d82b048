"""`billing_import` on real exports: every cost counted once, exactly, and bad input
leaving the database as it was."""

import gzip
import json
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import partial
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.db import IntegrityError, connection, transaction

from billing import services
from billing.importers.base import CsvFile, ImportFailure, NotColumnar
from billing.importers.focus import FocusImporter
from billing.loader import check_references
from billing.memo import Memo
from billing.models import BillingSource, CostRecord, DailyCost, ImportRun
from projects.models import AllocationRule
from tests.billing import importing
from tests.billing.importing import as_decimals, column_sums, read_csv, total
from tests.budgets.test_alert_workers import database_url
from tests.conftest import make_cost_record, make_project
from tests.data import AWS_CUR_LEGACY, FOCUS_REAL, SAMPLES

pytestmark = pytest.mark.django_db(transaction=True)

SPEC_EXAMPLES = sorted((SAMPLES / "focus-spec-v1.2-examples").glob("*.csv"))


run_import = partial(importing.run_import, source="focus")


def focus_sums(path: Path, column: str) -> dict[str, Decimal]:
    """The file's own total of a FOCUS cost column per currency; the specification's
    examples name no currency: they are in dollars."""
    rows = read_csv(path)
    return column_sums(rows, column, "BillingCurrency", default_currency="USD")


def test_the_real_focus_export_imports_to_the_last_decimal():
    code, result = run_import(FOCUS_REAL)
    assert code == 0, result["error"]
    assert result["status"] == "imported"
    assert result["rows"] == 1000 == CostRecord.objects.count()
    assert result["billing_periods"] == ["2024-09", "2024-10"]
    assert as_decimals(result["billed"]) == focus_sums(FOCUS_REAL, "BilledCost")
    assert as_decimals(result["effective"]) == focus_sums(FOCUS_REAL, "EffectiveCost")
    assert result["billed"] == {"USD": "20.52022672899"}


@pytest.mark.parametrize("path", SPEC_EXAMPLES, ids=lambda p: p.stem[:60])
def test_every_focus_specification_example_imports_with_exact_totals(path):
    # The examples leave out the mandatory BillingCurrency: they are in dollars.
    code, result = run_import(path, source=path.stem[:90], currency="USD")
    assert code == 0, result["error"]
    assert as_decimals(result["billed"]) == focus_sums(path, "BilledCost")
    assert as_decimals(result["effective"]) == focus_sums(path, "EffectiveCost")


def test_importing_the_same_file_twice_changes_nothing_and_says_so():
    run_import(FOCUS_REAL)
    ids = set(CostRecord.objects.values_list("pk", flat=True))
    code, result = run_import(FOCUS_REAL)
    assert (code, result["status"]) == (0, "unchanged")
    assert set(CostRecord.objects.values_list("pk", flat=True)) == ids


def test_a_restated_file_replaces_the_old_rows_of_its_periods_exactly(tmp_path):
    run_import(FOCUS_REAL)
    restated = tmp_path / "restated.csv"
    lines = FOCUS_REAL.read_text(encoding="utf-8").splitlines(keepends=True)
    restated.write_text("".join(lines[:501]), encoding="utf-8")  # half the rows
    october = list(CostRecord.objects.filter(billing_period_start__month=10))
    code, result = run_import(restated)
    assert (code, result["status"], result["rows"]) == (0, "imported", 500)
    assert result["billing_periods"] == ["2024-09"]
    assert CostRecord.objects.filter(billing_period_start__month=9).count() == 500
    # October is not in the restated file, so its row stays as it was.
    assert list(CostRecord.objects.filter(billing_period_start__month=10)) == october
    assert as_decimals(result["billed"]) == focus_sums(restated, "BilledCost")
    assert total(DailyCost.objects) == total(CostRecord.objects)


def test_gzip_files_import_like_plain_ones(tmp_path):
    packed = tmp_path / "focus.csv.gz"
    packed.write_bytes(gzip.compress(FOCUS_REAL.read_bytes()))
    code, result = run_import(packed)
    assert (code, result["rows"]) == (0, 1000)


def refuse_columns(self, path):
    raise NotColumnar("refused by the test")


@pytest.mark.parametrize("columnar", [True, False], ids=["columnar", "row by row"])
def test_a_tag_rule_takes_the_costs_with_its_tag_value_and_no_other(
    world, monkeypatch, columnar
):
    """The sample tags hundreds of business units; the rule names one. Its project
    gets exactly that unit's costs, read from the file, and the other units stay
    unallocated."""
    project = make_project(world.team, world.lead, "vienna")
    AllocationRule.objects.create(
        project=project, match_on="tag", tag_key="business_unit", value="ViennaAI"
    )
    if not columnar:
        monkeypatch.setattr(FocusImporter, "column_batches", refuse_columns)
    code, result = run_import(FOCUS_REAL)
    assert code == 0, result["error"]
    units = [
        (json.loads(row["Tags"]) if row["Tags"] != "NULL" else {}).get("business_unit")
        for row in read_csv(FOCUS_REAL)
    ]
    costs = [Decimal(row["EffectiveCost"]) for row in read_csv(FOCUS_REAL)]
    vienna = sum(c for c, unit in zip(costs, units, strict=True) if unit == "ViennaAI")
    assert len({unit for unit in units if unit}) > 1
    assert total(CostRecord.objects.filter(project=project), "effective_cost") == vienna
    assert total(DailyCost.objects.filter(project=project), "effective_cost") == vienna
    assert result["unallocated"] == {"USD": str(sum(costs) - vienna)}


def write(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


HEADER = FOCUS_REAL.read_bytes().split(b"\n", 1)[0]
GOOD_ROW = FOCUS_REAL.read_bytes().split(b"\n")[1]


def bad_cost_row() -> bytes:
    return GOOD_ROW.replace(b"NULL,0.00000080000,", b"NULL,abc,", 1)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", b"", "empty.csv: the file is empty"),
        (
            "header-only.csv",
            HEADER + b"\n",
            "header-only.csv: has a header but no cost rows",
        ),
        (
            "bad-cost.csv",
            HEADER + b"\n" + GOOD_ROW + b"\n" + bad_cost_row() + b"\n",
            "bad-cost.csv, row 3, column BilledCost: 'abc' is not a number",
        ),
        (
            "bad-date.csv",
            HEADER
            + b"\n"
            + GOOD_ROW.replace(b'"2024-09-18 23:00:00"', b'"yesterday"', 1),
            "bad-date.csv, row 2, column ChargePeriodEnd: 'yesterday' is not a date",
        ),
        (
            "latin1.csv",
            HEADER + b"\n" + GOOD_ROW.replace(b"SunBird", b"S\xfcnBird", 1),
            "latin1.csv, row 2: is not UTF-8 text (byte 38 of the line",
        ),
        (
            "truncated.csv.gz",
            gzip.compress(FOCUS_REAL.read_bytes())[:5000],
            "truncated.csv.gz: the compressed file is truncated or damaged",
        ),
        (
            "long.csv",
            HEADER
            + b"\n"
            + GOOD_ROW.replace(b'"SunBird"', b'"' + b"x" * 5000 + b'"', 1),
            "long.csv, row 2, column BillingAccountName: is 5,000 characters, over 200",
        ),
        (
            "one-endless-line.csv",
            HEADER + b"," + b"x" * (2 << 20),
            "one-endless-line.csv: the header is over 1,048,576 characters: this is "
            "not a billing export, or its first line is damaged",
        ),
        (
            "wide.csv",
            HEADER + b"," + b",".join(b"c%d" % n for n in range(5000)) + b"\n",
            "wide.csv: has 5,044 columns, over the 5,000 a billing export may have",
        ),
        (
            "missing-column.csv",
            HEADER.replace(b'"EffectiveCost",', b"", 1) + b"\n",
            "is not a FOCUS export: missing column EffectiveCost",
        ),
    ],
)
def test_bad_input_fails_clearly_and_keeps_what_was_there(
    tmp_path, name, content, message
):
    run_import(FOCUS_REAL)
    before = set(CostRecord.objects.values_list("pk", flat=True))
    daily = list(DailyCost.objects.values_list("pk", flat=True))
    code, result = run_import(write(tmp_path, name, content), format="focus")
    assert code == 1
    assert result["status"] == "failed"
    assert message in result["error"]
    assert set(CostRecord.objects.values_list("pk", flat=True)) == before
    assert list(DailyCost.objects.values_list("pk", flat=True)) == daily
    assert ImportRun.objects.latest("started_at").error == result["error"]
    assert BillingSource.objects.get(name="focus").last_error == result["error"]


def test_the_header_of_a_file_of_one_endless_line_is_read_in_bounded_memory(tmp_path):
    path = tmp_path / "endless.csv"
    path.write_bytes(b"a," * (16 << 20))  # 32 MB and 16 million columns, no newline
    tracemalloc.start()
    try:
        with pytest.raises(ImportFailure, match="the header is over 1,048,576"):
            CsvFile(path).header()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"{peak:,} bytes"


def test_a_file_is_loaded_again_when_an_import_that_started_before_it_loaded_after(
    tmp_path,
):
    """An upload that waited queued (the queue down) loads after a newer import of
    another file: that file, imported again, must replace it, not be "unchanged"."""
    lines = FOCUS_REAL.read_text().splitlines(keepends=True)
    shorter = tmp_path / "shorter.csv"
    shorter.write_text("".join(lines[:-1]))
    assert run_import(shorter)[1]["status"] == "imported"
    assert run_import(FOCUS_REAL)[1]["status"] == "imported"
    late = ImportRun.objects.latest("finished_at")
    # It had started before the shorter file's import: it waited queued.
    late.started_at = ImportRun.objects.earliest("started_at").started_at.replace(
        year=2020
    )
    late.save(update_fields=["started_at"])
    assert CostRecord.objects.count() == len(lines) - 1

    code, result = run_import(shorter)

    assert (code, result["status"]) == (0, "imported")
    assert CostRecord.objects.count() == len(lines) - 2


def test_an_upload_goes_into_its_source_even_when_renamed_while_it_waited():
    source = BillingSource.objects.create(name="AWS export", kind="focus")
    run = ImportRun.objects.create(
        source=source, source_name=source.name, file_name="focus.csv"
    )
    BillingSource.objects.filter(pk=source.pk).update(name="AWS (production)")

    outcome = services.import_run_execute(run=run, paths=[FOCUS_REAL])

    assert outcome.run.status == ImportRun.Status.IMPORTED
    assert list(BillingSource.objects.values_list("name", flat=True)) == [
        "AWS (production)"
    ]
    assert CostRecord.objects.filter(source=source).count() == 1000


def test_the_next_good_import_works_after_a_failure(tmp_path):
    run_import(write(tmp_path, "bad.csv", HEADER + b"\n" + bad_cost_row()))
    code, result = run_import(FOCUS_REAL)
    assert (code, result["status"], result["rows"]) == (0, "imported", 1000)
    assert BillingSource.objects.get(name="focus").last_error == ""


def test_an_unchanged_import_after_a_failure_clears_the_sources_error(tmp_path):
    run_import(FOCUS_REAL)
    code, failed = run_import(
        write(tmp_path, "bad.csv", HEADER + b"\n" + bad_cost_row())
    )
    assert code == 1
    assert "bad.csv" in BillingSource.objects.get(name="focus").last_error
    code, result = run_import(FOCUS_REAL)
    assert (code, result["status"]) == (0, "unchanged")
    source = BillingSource.objects.get(name="focus")
    assert source.last_error == ""
    latest = source.import_runs.order_by("-started_at", "-pk").first()
    assert source.last_sync_at == latest.finished_at


def test_a_failure_that_ends_after_a_later_success_leaves_the_source_healthy(
    tmp_path, time_machine
):
    """A source's status is its latest import: a slow bad import that started
    first and fails last does not paint red a source whose next import worked."""
    time_machine.move_to(datetime(2026, 12, 1, 9, tzinfo=UTC), tick=False)
    run_import(FOCUS_REAL)
    source = BillingSource.objects.get(name="focus")
    slow = ImportRun.objects.create(source=source, file_name="bad.csv")
    time_machine.move_to(datetime(2026, 12, 1, 9, 5, tzinfo=UTC), tick=False)
    code, result = run_import(FOCUS_REAL)
    assert (code, result["status"]) == (0, "unchanged")
    bad = write(tmp_path, "bad.csv", HEADER + b"\n" + bad_cost_row())
    services.import_run_execute(run=slow, paths=[bad])
    slow.refresh_from_db()
    assert slow.status == ImportRun.Status.FAILED
    assert BillingSource.objects.get(pk=source.pk).last_error == ""
    # With no success since it began, the same failure paints the source.
    time_machine.move_to(datetime(2026, 12, 1, 9, 10, tzinfo=UTC), tick=False)
    services.import_run_execute(
        run=ImportRun.objects.create(source=source, file_name="bad.csv"), paths=[bad]
    )
    assert "bad.csv" in BillingSource.objects.get(pk=source.pk).last_error


def test_a_wrong_format_on_a_new_source_leaves_no_source_behind():
    code, result = run_import(FOCUS_REAL, source="new", format="azure")
    assert code == 1
    assert "is not an Azure cost details export" in result["error"]
    assert not BillingSource.objects.filter(name="new").exists()
    code, result = run_import(FOCUS_REAL, source="new")
    assert (code, result["status"]) == (0, "imported")
    assert BillingSource.objects.get(name="new").kind == "focus"


@pytest.mark.parametrize(
    "format, found",
    [
        ("auto", "is an AWS Cost and Usage Report file"),
        ("aws-cur", "was declared as aws-cur"),
    ],
)
def test_a_file_of_another_kind_than_its_source_says_what_was_found_or_declared(
    format, found
):
    run_import(FOCUS_REAL)
    code, result = run_import(AWS_CUR_LEGACY, format=format)
    assert code == 1
    assert result["error"] == (
        f"{AWS_CUR_LEGACY.name}: {found}, but source 'focus' takes FOCUS export "
        "files: import it into another source"
    )
    assert BillingSource.objects.get(name="focus").kind == "focus"


def test_a_missing_file_fails_with_its_name(tmp_path):
    code, result = run_import(tmp_path / "nope.csv")
    assert code == 1
    assert result["error"].endswith("nope.csv: no such file or folder")


def test_a_focus_parquet_export_is_detected_and_imports_exactly(tmp_path):
    rows = read_csv(FOCUS_REAL)
    columns = {name: [row[name] for row in rows] for name in rows[0]}
    columns["BilledCost"] = [Decimal(value) for value in columns["BilledCost"]]
    table = pa.table(
        {
            name: pa.array(values, type=pa.decimal128(20, 11))
            if name == "BilledCost"
            else pa.array(values)
            for name, values in columns.items()
        }
    )
    path = tmp_path / "focus.parquet"
    pq.write_table(table, path)
    code, result = run_import(path)
    assert (code, result["rows"]) == (0, 1000), result["error"]
    assert as_decimals(result["billed"]) == focus_sums(FOCUS_REAL, "BilledCost")


def test_an_amount_too_large_to_store_fails_on_its_cell(tmp_path):
    huge = GOOD_ROW.replace(b"NULL,0.00000080000,", b"NULL,1e30,", 1)
    code, result = run_import(write(tmp_path, "huge.csv", HEADER + b"\n" + huge))
    assert code == 1
    assert (
        "huge.csv, row 2, column BilledCost: '1e30' is too large to store"
        in result["error"]
    )
    assert ImportRun.objects.get().status == ImportRun.Status.FAILED


def test_deletes_still_reach_the_cost_records_the_database_no_longer_guards(world):
    """CostRecord's keys have no database constraint: Django's on_delete does it."""
    project = make_project(world.team, world.lead, "vienna")
    AllocationRule.objects.create(
        project=project, match_on="tag", tag_key="business_unit", value="ViennaAI"
    )
    run_import(FOCUS_REAL)
    allocated = CostRecord.objects.filter(project=project).count()
    assert allocated
    project_id = project.pk
    project.delete()
    assert not CostRecord.objects.filter(project_id=project_id).exists()
    assert CostRecord.objects.filter(project=None).count() >= allocated
    ImportRun.objects.all().delete()
    assert not CostRecord.objects.exclude(import_run=None).exists()
    BillingSource.objects.get(name="focus").delete()
    assert not CostRecord.objects.exists()


def test_a_key_gone_by_the_end_of_the_load_fails_the_import():
    source = BillingSource.objects.create(name="focus", kind="focus")
    run = ImportRun.objects.create(source=source)
    check_references(source.pk, run.pk, project_ids=set(), run_ids=set())
    with pytest.raises(IntegrityError, match=r"project \[999999\] no longer exists"):
        check_references(source.pk, run.pk, project_ids={999999}, run_ids={None})


def test_a_memo_forgets_everything_when_full_rather_than_grow():
    seen = []
    memo = Memo(lambda value: seen.append(value) or value.upper(), limit=2)
    assert [memo[v] for v in ("a", "b", "a", "c", "a")] == ["A", "B", "A", "C", "A"]
    assert seen == ["a", "b", "c", "a"]
    assert len(memo) <= 2


@pytest.fixture
def lock_timeout(settings):
    """This session gives up on a lock after 2 seconds, as long as the test runs."""
    settings.DATABASE_LOCK_WAIT_SECONDS = 2
    with connection.cursor() as cursor:
        cursor.execute("SET lock_timeout = '2s'")
    yield
    with connection.cursor() as cursor:
        cursor.execute("RESET lock_timeout")


def test_a_large_import_goes_on_while_another_sources_import_holds_the_analyze_lock(
    monkeypatch, lock_timeout
):
    # An import of another source that has analysed the table holds this lock until
    # it commits; this import must not wait for it (it would fail on the timeout).
    monkeypatch.setattr(services, "ANALYZE_AFTER_ROWS", 1)  # FOCUS_REAL is "large"
    with psycopg.connect(database_url()) as other_import:
        other_import.execute(
            "LOCK TABLE billing_costrecord IN SHARE UPDATE EXCLUSIVE MODE"
        )
        code, result = run_import(FOCUS_REAL)
    assert code == 0, result["error"]
    assert (result["status"], result["rows"]) == ("imported", 1000)


def test_every_session_waits_for_a_lock_and_idles_in_a_transaction_for_a_time_only():
    with connection.cursor() as cursor:
        cursor.execute("SHOW lock_timeout")
        assert cursor.fetchone() == ("10min",)
        cursor.execute("SHOW idle_in_transaction_session_timeout")
        assert cursor.fetchone() == ("5min",)


@contextmanager
def held_by_another_import(lock: Callable[[], None]) -> Iterator[None]:
    """Another import's transaction, in a thread of its own, holding what `lock`
    takes until the block ends."""
    locked, release = threading.Event(), threading.Event()

    def other_import() -> None:
        try:
            with transaction.atomic():
                lock()
                locked.set()
                release.wait(30)
        finally:
            connection.close()  # this thread's

    thread = threading.Thread(target=other_import)
    thread.start()
    try:
        assert locked.wait(10), "the other import never took its lock"
        yield
    finally:
        release.set()
        thread.join()


def test_an_import_goes_on_while_another_rebuilds_the_costs_of_other_months(
    lock_timeout,
):
    october = partial(services.rollup_lock, date(2024, 10, 1), date(2024, 11, 1))
    with held_by_another_import(october):  # every charge of FOCUS_REAL is in September
        code, result = run_import(FOCUS_REAL)
    assert code == 0, result["error"]
    assert (result["status"], result["rows"]) == ("imported", 1000)


def test_an_import_that_waits_too_long_for_the_costs_of_its_months_says_why(
    lock_timeout,
):
    august_to_september = partial(
        services.rollup_lock, date(2024, 8, 20), date(2024, 9, 2)
    )
    with held_by_another_import(august_to_september):
        code, result = run_import(FOCUS_REAL)
    assert code == 1
    assert result["error"] == (
        "another import is rebuilding the costs of these months for longer than this "
        "one waits (2 seconds); try again once it has finished"
    )
    assert not CostRecord.objects.exists()
    assert ImportRun.objects.get().status == ImportRun.Status.FAILED


def test_an_import_that_waits_too_long_for_another_of_its_source_says_why(
    lock_timeout,
):
    run_import(FOCUS_REAL)
    source = BillingSource.objects.get(name="focus")
    with held_by_another_import(partial(services.source_lock, source)):
        code, result = run_import(FOCUS_REAL)
    assert code == 1
    assert result["error"] == (
        "another import of focus has been running for longer than this one waits "
        "(2 seconds); try again once it has finished"
    )
    waited = ImportRun.objects.latest("started_at")
    assert (waited.status, waited.error) == (ImportRun.Status.FAILED, result["error"])
    assert BillingSource.objects.get(name="focus").last_error == ""  # not its fault


def test_an_import_that_waits_too_long_for_another_creating_its_source_says_why(
    lock_timeout,
):
    """The first import of a new source creates it in its transaction: a second
    import of that name waits for the name's key, and says why it gave up."""
    creating = partial(BillingSource.objects.create, name="new", kind="focus")
    with held_by_another_import(creating):
        code, result = run_import(FOCUS_REAL, source="new")
    assert code == 1
    assert result["error"] == (
        "another import of new has been running for longer than this one waits "
        "(2 seconds); try again once it has finished"
    )
    assert ImportRun.objects.get().status == ImportRun.Status.FAILED
    assert BillingSource.objects.get(name="new").last_error == ""  # not its fault


def test_deleting_a_source_waits_for_an_import_loading_into_it_then_refuses():
    """The delete locks the source's row first: an import holding it is waited for,
    and the rows it committed are seen, so a source is never deleted under them."""
    source = BillingSource.objects.create(name="typo", kind="focus")
    loading, release = threading.Event(), threading.Event()

    def other_import() -> None:
        try:
            with transaction.atomic():
                services.source_lock(source)
                make_cost_record(date(2026, 1, 5), "1.25", source=source)
                loading.set()
                release.wait(30)
        finally:
            connection.close()  # this thread's

    thread = threading.Thread(target=other_import)
    thread.start()
    try:
        assert loading.wait(10), "the other import never took its lock"
        threading.Timer(1.0, release.set).start()
        with pytest.raises(services.SourceHoldsData, match="“typo” holds cost data"):
            services.billing_source_delete(source=source)
    finally:
        release.set()
        thread.join()
    assert BillingSource.objects.filter(pk=source.pk).exists()
    assert CostRecord.objects.filter(source=source).count() == 1
