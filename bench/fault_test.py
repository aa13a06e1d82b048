"""Issue #12: every fault of the reliability issue, injected into the real thing.

Against a PostgreSQL database of its own (created, migrated and seeded here), a Redis
and a mail server that the script starts itself on free ports of loopback (never the
machine's shared servers), and a real Celery worker of the project (`celery -A
spendtracker worker`, prefork with one child, on the default and the imports queue,
as production runs it), each fault is injected, the outcome read back from the
database, the HTTP answer or the exit code, and checked against what the issue
promises. Every import is checked against the file's own sums: its rows and its
billed and effective totals per currency, read from the CSV without the importer, to
the last decimal.

The Redis stand-in is `redis-server --port P --save "" --appendonly no`: stopping it
is the broker and the cache going down (what it held is lost, as in a crash), starting
it again is their return. The mail stand-in is a socket of this process: closed (the
port refuses connections), hanging (accepts and never answers) or serving (speaks
enough SMTP to take a message and keeps it). Beat's tasks are sent by the script when
it wants them to run (the sweep of import runs, the sending of kept tasks and of owed
emails) rather than waited for; CELERY_TASK_TIME_LIMIT is 20 s, so the sweep finds a
dead run in seconds rather than an hour.

Prints a table (fault, expected, observed, verdict) and exits 1 unless every row
passes. Takes about two minutes.

    .venv/bin/python bench/fault_test.py --json bench/results/DATE-fault-test.json
    .venv/bin/python bench/fault_test.py --only 1,3,9     # some faults only
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email import message_from_bytes
from pathlib import Path

import import_benchmark as bench
from concurrent_imports import file_totals

ROOT = bench.BENCH_DIR.parent
TIME_LIMIT = 20  # CELERY_TASK_TIME_LIMIT of every process here, in seconds
LOCK_WAIT = 3  # DATABASE_LOCK_WAIT_SECONDS of the import that must give up
EMAIL_TIMEOUT = 2
BIG_ROWS = 40_000  # long enough to be caught in the middle of its COPY
SMALL_ROWS = 5_000
HUGE_HEADER_MB = 53  # as the file
HEADER_MEMORY_MB = 32  # over what a small import takes: not the 53 MB line, twice
ENCRYPTION_KEY = "dGVzdHMtb25seS1rZXktMzItYnl0ZXMtbG9uZyEhISE="


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(condition: Callable[[], object], seconds: float, step: float = 0.2):
    """`condition`'s first true value within `seconds`, else None."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value or None
        time.sleep(step)


# --------------------------------------------------------------------------- stand-ins


class RedisStandIn:
    """A redis-server of the script's own, keeping nothing on disk."""

    def __init__(self, workdir: Path) -> None:
        self.port, self.workdir = free_port(), workdir
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
            + ["--save", "", "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if not wait_for(self.answers, 10, 0.05):
            raise SystemExit(f"redis-server did not start on port {self.port}")

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()  # a crash: nothing saved, nothing said goodbye
            self.process.wait(timeout=10)
        self.process = None


class MailStandIn:
    """A mail server on a port of its own: `closed` (connections refused), `hanging`
    (accepted, never answered) or `serving` (takes every message)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.mode = "closed"
        self.connections = 0
        self.received: list[tuple[str, str]] = []  # (To, Subject)
        self._listener: socket.socket | None = None
        self._held: list[socket.socket] = []

    def set(self, mode: str) -> None:
        for held in self._held:  # what hung so far is dropped
            held.close()
        self._held = []
        self.mode = mode
        if mode == "closed" and self._listener is not None:
            self._listener.close()
            self._listener = None
        elif mode != "closed" and self._listener is None:
            self._listener = wait_for(self._bind, 10)
            threading.Thread(
                target=self._accept, args=(self._listener,), daemon=True
            ).start()

    def _bind(self) -> socket.socket | None:
        try:
            listener = socket.create_server(("127.0.0.1", self.port))
        except OSError:  # the closed listener's accept has not noticed yet
            return None
        listener.settimeout(0.2)
        return listener

    def _accept(self, listener: socket.socket) -> None:
        while listener.fileno() != -1:
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            self.connections += 1
            if self.mode == "hanging":
                self._held.append(connection)
            else:
                threading.Thread(
                    target=self._session, args=(connection,), daemon=True
                ).start()

    def _session(self, connection: socket.socket) -> None:
        connection.settimeout(30)
        with connection, connection.makefile("rb") as lines:

            def reply(text: str) -> None:
                connection.sendall(f"{text}\r\n".encode())

            reply("220 fault-test mail server ready")
            while line := lines.readline():
                verb = line.decode().split(" ", 1)[0].strip().upper()
                if verb == "DATA":
                    reply("354 end with <CRLF>.<CRLF>")
                    body = []
                    while (line := lines.readline()) not in (b".\r\n", b""):
                        body.append(line[1:] if line.startswith(b"..") else line)
                    message = message_from_bytes(b"".join(body))
                    self.received.append((message["To"], message["Subject"]))
                    reply("250 queued")
                elif verb == "QUIT":
                    reply("221 bye")
                    return
                else:
                    reply("250 OK")


class Worker:
    """The project's Celery worker, prefork with one child, on both queues; its
    sessions are named `fault-worker` in pg_stat_activity."""

    def __init__(self, env: dict, workdir: Path) -> None:
        self.env, self.log = env | {"PGAPPNAME": "fault-worker"}, workdir / "worker.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        command = [
            sys.executable, "-m", "celery", "-A", "spendtracker", "worker",
            "--pool", "prefork", "--concurrency", "1", "--queues", "celery,imports",
            "--hostname", f"fault-{uuid.uuid4().hex[:6]}@bench", "--without-gossip",
            "--without-mingle", "--without-heartbeat", "--loglevel", "INFO",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=self.env,
            stdout=self.log.open("a"),
            stderr=subprocess.STDOUT,
        )
        if not wait_for(lambda: "ready." in self.log.read_text(), 120):
            raise SystemExit(f"the worker did not start: {self.log}")

    def child(self) -> int | None:
        """The pool process that runs the tasks."""
        pid = self.process.pid
        try:
            text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        except OSError:
            return None
        children = [int(child) for child in text.split()]
        return children[0] if children else None

    def text(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# --------------------------------------------------------------------------- the run


@dataclass
class Row:
    number: int
    fault: str
    expected: str
    observed: str = ""
    passed: bool = False
    seconds: float = 0.0

    @property
    def verdict(self) -> str:
        return "pass" if self.passed else "FAIL"


class Bench:
    """What the faults share: the database, the stand-ins, the worker, the files."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.workdir = workdir
        self.db = bench.Database(args.server, args.database)
        self.redis = RedisStandIn(workdir)
        self.mail = MailStandIn()
        self.media = workdir / "media"
        self.env = bench.app_env(
            self.db,
            CELERY_BROKER_URL=self.redis.url,
            CELERY_TASK_TIME_LIMIT=str(TIME_LIMIT),
            DJANGO_ALLOWED_HOSTS="testserver,127.0.0.1",
            DJANGO_SECRET_KEY="fault-test-only-secret-key-of-some-length-0123456789",
            DJANGO_MEDIA_ROOT=str(self.media),
            FIELD_ENCRYPTION_KEY=ENCRYPTION_KEY,
            EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
            EMAIL_HOST="127.0.0.1",
            EMAIL_PORT=str(self.mail.port),
            EMAIL_TIMEOUT=str(EMAIL_TIMEOUT),
            DJANGO_SETTINGS_MODULE="spendtracker.settings",
        )
        self.worker = Worker(self.env, workdir)
        self.watch = None  # an autocommit connection that looks at the sessions

    # -- files

    def file(self, rows: int, organisation: int) -> Path:
        """A generated FOCUS file whose billing accounts are its organisation's alone
        (each source of the run its own: a source refuses another's accounts)."""
        return bench.data_file(
            self.workdir, rows, organisation=organisation, seed=organisation
        )

    # -- database

    def sessions(self, name: str, query_like: str = "%") -> list[int]:
        """The PostgreSQL sessions of the processes named `name`, busy on a query
        like `query_like`."""
        rows = self.watch.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = %s AND state = 'active' AND query LIKE %s",
            [name, query_like],
        ).fetchall()
        return [pid for (pid,) in rows]

    def sums_check(self, source_name: str, path: Path) -> tuple[bool, str]:
        """The source's cost records against the file's own rows and sums."""
        from django.db.models import Count, Sum

        from billing.models import CostRecord, ImportRun

        expected = file_totals(path)
        records = CostRecord.objects.filter(source__name=source_name)
        in_db = {
            row["billing_currency"]: row
            for row in records.values("billing_currency").annotate(
                rows=Count("id"),
                billed=Sum("billed_cost"),
                effective=Sum("effective_cost"),
            )
        }
        rows = sum(row["rows"] for row in in_db.values())
        same = rows == expected["rows"] and set(in_db) == set(expected["currencies"])
        for currency, (billed, effective) in expected["currencies"].items():
            got = in_db.get(currency, {})
            same = same and (got.get("billed"), got.get("effective")) == (
                Decimal(billed),
                Decimal(effective),
            )
        imported = ImportRun.objects.filter(
            source__name=source_name, status=ImportRun.Status.IMPORTED
        ).count()
        text = (
            f"{rows:,} rows ({expected['rows']:,} in the file), sums "
            f"{'equal' if same else 'DIFFER'}, {imported} imported run(s)"
        )
        return same and imported == 1, text

    # -- tasks

    def run_task(self, name: str, *args, seconds: float = 60) -> float | None:
        """Send a task to the worker and wait for it to succeed; its run time as the
        worker logged it, None if it did not succeed in time."""
        from spendtracker.celery import app

        task_id = str(uuid.uuid4())
        app.send_task(name, args, task_id=task_id)
        found = wait_for(
            lambda: re.search(
                rf"\[{task_id}\] succeeded in ([\d.]+)s", self.worker.text()
            ),
            seconds,
        )
        return float(found.group(1)) if found else None

    def command(self, *args: str, name: str = "fault-command", **env: str):
        """`manage.py ARGS` as its own process (its sessions named `name`)."""
        return subprocess.Popen(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env | {"PGAPPNAME": name} | env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def redis_down(self) -> None:
        self.redis.stop()

    def redis_back(self) -> None:
        self.redis.start()


def caught_in_copy(bench_: Bench, name: str, alive: Callable[[], bool]) -> bool:
    """Wait until a session named `name` is in the middle of its COPY."""
    return bool(
        wait_for(lambda: bench_.sessions(name, "COPY %") or not alive(), 120, step=0.01)
        and bench_.sessions(name, "COPY %")
    )


def finance_client():
    from django.test import Client

    from accounts.models import User

    client = Client()
    client.force_login(User.objects.get(email="finance@fault.example"))
    return client


def portal_upload(client, path: Path, source_name: str):
    from django.urls import reverse

    with path.open("rb") as upload:
        return client.post(
            reverse("upload"),
            {
                "file": upload,
                "source": "new",
                "new_source_name": source_name,
                "new_source_kind": "focus",
                "file_format": "auto",
            },
            HTTP_ACCEPT="application/json",
        )


def run_of(run_id: int):
    from billing.models import ImportRun

    return ImportRun.objects.get(pk=run_id)


def finished(run_id: int) -> bool:
    return run_of(run_id).status not in ("queued", "running")


# --------------------------------------------------------------------------- faults


def fault_1(b: Bench, row: Row) -> None:
    path = b.file(BIG_ROWS, 1)
    answer = portal_upload(finance_client(), path, "f1-upload")
    run_id = answer.json()["run"]
    in_copy = caught_in_copy(b, "fault-worker", lambda: not finished(run_id))
    child = b.worker.child()
    if in_copy and child:
        os.kill(child, signal.SIGKILL)
    wait_for(lambda: finished(run_id), 120)
    run = run_of(run_id)
    same, sums = b.sums_check("f1-upload", path)
    lost = "WorkerLostError" in b.worker.text()
    row.observed = (
        f"killed in COPY: {in_copy}; run {run.status} at attempt {run.attempts}; {sums}"
    )
    row.passed = (
        in_copy and lost and run.status == "imported" and run.attempts == 2 and same
    )


def fault_2(b: Bench, row: Row) -> None:
    from billing.models import CostRecord, ImportRun

    path = b.file(BIG_ROWS, 2)
    started = b.command(
        "billing_import", str(path), "--source", "f2-killed", name="fault-killed"
    )
    in_copy = caught_in_copy(b, "fault-killed", lambda: started.poll() is None)
    started.kill()
    started.wait()
    run = ImportRun.objects.get(source_name="f2-killed")
    still = run.status
    # The sweep, as beat sends it every five minutes, once the time limit is past.
    wait_for(
        lambda: (
            datetime.now(UTC) > run.attempted_at + timedelta(seconds=TIME_LIMIT + 1)
        ),
        TIME_LIMIT + 5,
    )
    swept = b.run_task("billing.tasks.import_runs_sweep_task") is not None
    run.refresh_from_db()
    loaded = CostRecord.objects.filter(import_run=run).count()
    row.observed = (
        f"killed in COPY: {in_copy}; {still} after the kill; after the sweep "
        f"{run.status}: {run.error!r}; {loaded} rows loaded"
    )
    row.passed = (
        in_copy
        and swept
        and run.status == "failed"
        and "the worker stopped" in run.error.lower()
        and "run the import again" in run.error.lower()
        and loaded == 0
    )


def fault_3(b: Bench, row: Row) -> None:
    from billing.models import ImportRun

    path = b.file(SMALL_ROWS, 3)
    b.redis_down()
    try:
        done = b.command("billing_import", str(path), "--source", "f3-cli", "--json")
        out, err = done.communicate(timeout=300)
    finally:
        b.redis_back()
    same, sums = b.sums_check("f3-cli", path)
    status = json.loads(out)["status"] if out.strip().startswith("{") else out[-200:]
    row.observed = f"exit {done.returncode}, {status}; {sums}"
    row.passed = done.returncode == 0 and status == "imported" and same
    del err  # the evaluation that could not be queued is logged, with its traceback
    run = ImportRun.objects.get(source_name="f3-cli")
    left = run.announce_due
    swept = b.run_task("billing.tasks.import_runs_sweep_task") is not None
    run.refresh_from_db()
    row.observed += (
        f"; its alert evaluation left for the sweep: {left}, announced by the sweep "
        f"once Redis is back: {swept and not run.announce_due}"
    )
    row.passed = row.passed and left and swept and not run.announce_due


def fault_4(b: Bench, row: Row) -> None:
    path = b.file(SMALL_ROWS, 4)
    b.redis_down()
    try:
        answer = portal_upload(finance_client(), path, "f4-upload")
        body = answer.json() if answer.status_code < 500 else {}
        run_id = body.get("run")
        waiting = run_of(run_id).status if run_id else "no run"
    finally:
        b.redis_back()
    swept = b.run_task("billing.tasks.import_runs_sweep_task") is not None
    wait_for(lambda: run_id and finished(run_id), 120)
    same, sums = b.sums_check("f4-upload", path)
    run = run_of(run_id) if run_id else None
    row.observed = (
        f"{answer.status_code} {body.get('status')!r}; run {waiting} while down; "
        f"after Redis and the sweep: {run.status if run else '-'}; {sums}"
    )
    row.passed = (
        answer.status_code == 202
        and body.get("status") == "queued"
        and waiting == "queued"
        and swept
        and run is not None
        and run.status == "imported"
        and same
    )


def fault_5(b: Bench, row: Row) -> None:
    from django.test import Client

    b.redis_down()
    try:
        answer = Client().get("/healthz")
    finally:
        b.redis_back()
    body = answer.json() if answer.get("Content-Type") == "application/json" else {}
    row.observed = (
        f"{answer.status_code}, status {body.get('status')!r}, "
        f"broker {body.get('broker')!r}, database {body.get('database')!r}"
    )
    row.passed = (answer.status_code, body.get("status"), body.get("broker")) == (
        200,
        "degraded",
        "down",
    ) and body.get("database") == "ok"


def fault_6(b: Bench, row: Row) -> None:
    from django.db.models import Sum
    from django.urls import reverse

    from billing.models import BillingSource, ComputeInvoice, CostRecord
    from core.models import UnsentTask

    invoice = ComputeInvoice.objects.get(invoice_number="FAULT-6")
    load = "billing.tasks.compute_invoices_load_task"
    received = re.compile(rf"Task {re.escape(load)}\[[^]]+\] received")
    received_before = len(received.findall(b.worker.text()))
    earlier = list(
        UnsentTask.objects.values_list("pk", flat=True)
    )  # an earlier fault's, kept while Redis was down
    b.redis_down()
    try:
        answer = finance_client().post(
            reverse("invoice_decide", args=[invoice.pk]), {"status": "approved"}
        )
        kept = list(
            UnsentTask.objects.exclude(pk__in=earlier).values_list("task", flat=True)
        )
    finally:
        b.redis_back()
    invoice.refresh_from_db()
    sent = b.run_task("core.tasks.unsent_tasks_send") is not None
    invoice_cost = CostRecord.objects.filter(
        source__kind=BillingSource.Kind.COMPUTE_INVOICE
    )
    loaded = wait_for(lambda: invoice_cost.exists(), 60)
    time.sleep(2)  # a second run of the load, if any, reaches the log
    runs = len(received.findall(b.worker.text())) - received_before
    billed = invoice_cost.aggregate(billed=Sum("billed_cost"))["billed"]
    left = UnsentTask.objects.count()
    row.observed = (
        f"decision answered {answer.status_code}, invoice {invoice.status}, kept "
        f"{kept}; Redis back and unsent_tasks_send: {left} kept, the load ran "
        f"{runs} time(s), {billed} loaded"
    )
    row.passed = (
        answer.status_code in (200, 302)
        and invoice.status == "approved"
        and kept == [load]
        and sent
        and bool(loaded)
        and left == 0
        and runs == 1
        and billed == Decimal("1234.5")
    )


def owed_emails(group: str, projects: int) -> list[int]:
    """`projects` new projects at 90% of this month's plan, each alert owed to its
    lead and to finance: the notifications recorded (not yet sent), by id."""
    from budgets.alerts import alerts_evaluate

    seed_overspent(group, projects)
    return list(alerts_evaluate(send_later=False).notifications)


def notifications(ids: list[int]) -> dict[str, int]:
    from django.db.models import Count

    from budgets.models import Notification

    rows = Notification.objects.filter(pk__in=ids).values("status")
    return {r["status"]: r["n"] for r in rows.annotate(n=Count("id"))}


def fault_7(b: Bench, row: Row) -> None:
    ids = owed_emails("refused", 3)
    b.mail.set("closed")
    sweeps = sum(
        b.run_task("budgets.tasks.notifications_send") is not None for _ in range(12)
    )
    during = notifications(ids)
    b.mail.set("serving")
    received_before = len(b.mail.received)
    after = [b.run_task("budgets.tasks.notifications_send") for _ in range(2)]
    delivered = b.mail.received[received_before:]
    row.observed = (
        f"{len(ids)} owed; after {sweeps} refused sweeps {during}; back: "
        f"{notifications(ids)}, {len(delivered)} delivered, "
        f"{len(set(delivered))} distinct"
    )
    row.passed = (
        len(ids) == 6
        and sweeps == 12
        and during == {"pending": 6}
        and None not in after
        and notifications(ids) == {"sent": 6}
        and len(delivered) == len(set(delivered)) == 6
    )


def fault_8(b: Bench, row: Row) -> None:
    from core.delivery import BREAKER_FAILURES

    ids = owed_emails("hanging", 4)
    b.mail.set("hanging")
    connections_before = b.mail.connections
    took = b.run_task("budgets.tasks.notifications_send", seconds=120)
    tried = b.mail.connections - connections_before
    during = notifications(ids)
    b.mail.set("serving")
    received_before = len(b.mail.received)
    later = b.run_task("budgets.tasks.notifications_send")
    delivered = b.mail.received[received_before:]
    row.observed = (
        f"{len(ids)} owed; the sweep tried {tried} connections and took "
        f"{took if took is None else round(took, 1)} s (one timeout per email: "
        f"{len(ids) * EMAIL_TIMEOUT} s), {during}; "
        f"later: {notifications(ids)}, {len(delivered)} delivered"
    )
    row.passed = (
        took is not None
        and tried == BREAKER_FAILURES
        and took < (BREAKER_FAILURES + 1) * EMAIL_TIMEOUT
        and during == {"pending": len(ids)}
        and later is not None
        and notifications(ids) == {"sent": len(ids)}
        and len(delivered) == len(set(delivered)) == len(ids)
    )


def fault_9(b: Bench, row: Row) -> None:
    """The command's session is terminated from another one, while it waits for a
    table this script holds: its connection drops in the middle of the command."""
    holder = b.db.connect()
    holder.execute("LOCK TABLE budgets_alertrule IN ACCESS EXCLUSIVE MODE")
    started = b.command("evaluate_alerts", "--json", name="fault-evaluate")
    try:
        waiting = wait_for(
            lambda: b.watch.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name ="
                " 'fault-evaluate' AND wait_event_type = 'Lock'"
            ).fetchall(),
            60,
            0.05,
        )
        for (pid,) in waiting or []:
            b.watch.execute("SELECT pg_terminate_backend(%s)", [pid])
    finally:
        holder.rollback()
        holder.close()
    out, err = started.communicate(timeout=120)
    try:
        printed = json.loads(out)
    except ValueError:
        printed = {}
    error = printed.get("error") or ""
    row.observed = (
        f"connection dropped: {bool(waiting)}; exit {started.returncode}; JSON "
        f"error {error[:60]!r}; traceback: {'Traceback' in err}"
    )
    row.passed = (
        bool(waiting)
        and started.returncode not in (0, None)
        and error.startswith("The database failed")
        and "Traceback" not in err
    )


def fault_10(b: Bench, row: Row) -> None:
    """Two imports stopped (SIGSTOP) in the middle of their COPY, each holding its
    source as a stalled import does: one of a source that exists, one creating a
    new source. Meanwhile another source is imported, and each stalled source once
    more; then the stalled ones are resumed."""
    from billing.models import BillingSource

    BillingSource.objects.create(name="f10-existing", kind=BillingSource.Kind.FOCUS)
    files = {"f10-existing": b.file(BIG_ROWS, 5), "f10-new": b.file(BIG_ROWS, 9)}
    other_file = b.file(SMALL_ROWS, 6)
    stalled, in_copy = {}, {}
    for source, path in files.items():
        name = f"fault-stalled-{source}"
        stalled[source] = process = b.command(
            "billing_import", str(path), "--source", source, name=name
        )
        in_copy[source] = caught_in_copy(b, name, lambda p=process: p.poll() is None)
        process.send_signal(signal.SIGSTOP)
    second: dict[str, tuple[int, float, str]] = {}
    try:
        other = b.command(
            "billing_import", str(other_file), "--source", "f10-other", "--json"
        )
        other.communicate(timeout=120)
        other_same, other_sums = b.sums_check("f10-other", other_file)
        for source, path in files.items():
            began = time.monotonic()
            again = b.command(
                "billing_import", str(path), "--source", source, "--json",
                DATABASE_LOCK_WAIT_SECONDS=str(LOCK_WAIT),
            )  # fmt: skip
            out, _ = again.communicate(timeout=120)
            error = (json.loads(out).get("error") or "") if out.strip() else out
            second[source] = (again.returncode, time.monotonic() - began, error)
    finally:
        for process in stalled.values():
            process.send_signal(signal.SIGCONT)
    resumed = {}
    for source, process in stalled.items():
        process.communicate(timeout=300)
        resumed[source] = (process.returncode, b.sums_check(source, files[source])[0])
    row.observed = (
        f"stalled in COPY: {all(in_copy.values())}; other source: exit "
        f"{other.returncode}, {other_sums}; "
        + "; ".join(
            f"{source} again: exit {code} after {waited:.1f} s: {error!r}"
            for source, (code, waited, error) in second.items()
        )
        + "; the stalled ones resumed: "
        + ", ".join(
            f"exit {code}, sums {'equal' if same else 'DIFFER'}"
            for code, same in resumed.values()
        )
    )
    row.passed = (
        all(in_copy.values())
        and other.returncode == 0
        and other_same
        and all(
            code == 1
            and LOCK_WAIT <= waited < LOCK_WAIT + 30
            and error
            == (
                f"another import of {source} has been running for longer than this "
                f"one waits ({LOCK_WAIT} seconds); try again once it has finished"
            )
            for source, (code, waited, error) in second.items()
        )
        and all(code == 0 and same for code, same in resumed.values())
    )


def fault_11(b: Bench, row: Row) -> None:
    """A FOCUS file declared as Azure for a new source; then the right format for
    that name; then Azure again, for the FOCUS source that now exists."""
    from billing.models import BillingSource

    def billing_import(*args: str) -> tuple[int, str]:
        done = b.command(
            "billing_import", str(path), "--source", "f11-new", "--json", *args
        )
        out, _ = done.communicate(timeout=120)
        return done.returncode, json.loads(out).get("error") or ""

    path = b.file(SMALL_ROWS, 7)
    code, error = billing_import("--format", "azure")
    created = BillingSource.objects.filter(name="f11-new").exists()
    right, _ = billing_import()
    kind = BillingSource.objects.filter(name="f11-new").values_list("kind", flat=True)
    again, declared = billing_import("--format", "azure")
    same, sums = b.sums_check("f11-new", path)
    row.observed = (
        f"exit {code}, source created: {created}, {error[len(path.name) + 2 :]!r}; "
        f"the right format: exit {right}, source kind {list(kind)}, {sums}; azure "
        f"again: exit {again}, {declared[len(path.name) + 2 :]!r}"
    )
    row.passed = (
        code == 1
        and not created
        and "Azure" in error
        and right == 0
        and list(kind) == ["focus"]
        and same
        and again == 1
        and "declared as azure" in declared
    )


def peak_import(b: Bench, path: Path, source: str) -> tuple[int, float, str]:
    """`billing_import` of `path` as its own process: exit code, peak RSS in MB (of
    that very process, from wait4) and its error."""
    started = b.command("billing_import", str(path), "--source", source, "--json")
    _pid, status, usage = os.wait4(started.pid, 0)
    started.returncode = os.waitstatus_to_exitcode(status)
    out = started.stdout.read()
    error = (json.loads(out).get("error") or "") if out.strip() else out
    return started.returncode, usage.ru_maxrss / 1024, error


def fault_12(b: Bench, row: Row) -> None:
    path = b.workdir / "huge-header.csv"
    with path.open("wb") as huge:
        column = b'"x_Column",'
        huge.write(column * (HUGE_HEADER_MB * 2**20 // len(column)))
        huge.write(b'"BilledCost"\n1\n')
    code, peak, error = peak_import(b, path, "f12-huge")
    small_code, small_peak, _ = peak_import(b, b.file(SMALL_ROWS, 8), "f12-small")
    row.observed = (
        f"exit {code}, peak {peak:.0f} MB (a {SMALL_ROWS:,}-row import: "
        f"{small_peak:.0f} MB); {error[len(path.name) + 2 : 90]!r}"
    )
    row.passed = (
        code == 1
        and "the header is over" in error
        and small_code == 0
        and peak < small_peak + HEADER_MEMORY_MB
    )


FAULTS: dict[int, tuple[str, str, Callable[[Bench, Row], None]]] = {
    1: (
        "worker SIGKILLed mid-import of a portal upload",
        "requeued, imported once at attempt 2, sums equal the file's",
        fault_1,
    ),
    2: (
        "billing_import command SIGKILLed mid-import",
        "the sweep fails it after the time limit: 'the worker stopped', run it "
        "again; nothing loaded",
        fault_2,
    ),
    3: (
        "Redis down: billing_import on the command line",
        "exit 0, imported, sums equal the file's; the alert evaluation it sets off "
        "is queued by the sweep once Redis is back",
        fault_3,
    ),
    4: (
        "Redis down: portal upload",
        "202 queued; Redis back + sweep: imported, sums equal the file's",
        fault_4,
    ),
    5: (
        "Redis down: /healthz",
        "200, status degraded, broker down, database ok",
        fault_5,
    ),
    6: (
        "Redis down: an invoice approved in the portal",
        "no 500, approved; its load kept (UnsentTask), sent once when Redis is back",
        fault_6,
    ),
    7: (
        "mail server refusing connections for 12 sweeps",
        "all 6 emails still owed, then delivered once each when it returns",
        fault_7,
    ),
    8: (
        "mail server hanging",
        f"the sweep stops after 3 timeouts (< {4 * EMAIL_TIMEOUT} s), emails "
        "delivered once later",
        fault_8,
    ),
    9: (
        "evaluate_alerts --json, its database connection dropped",
        "JSON with an error, non-zero exit, no traceback",
        fault_9,
    ),
    10: (
        "an import stalled holding its source (one existing, one it creates)",
        f"another source's import proceeds (sums equal); the same source's fails "
        f"after {LOCK_WAIT} s saying why; the stalled one ends right",
        fault_10,
    ),
    11: (
        "wrong --format (azure) on a new source name",
        "exit 1, no source created; the right format then imports into that name "
        "(sums equal); azure declared for it now says 'declared as azure'",
        fault_11,
    ),
    12: (
        f"a {HUGE_HEADER_MB} MB header line",
        "refused: 'the header is over ...'; peak memory within "
        f"{HEADER_MEMORY_MB} MB of a small import's",
        fault_12,
    ),
}


# --------------------------------------------------------------------------- setup


def django_setup(env: dict) -> None:
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.conf import settings

    warnings.filterwarnings("ignore", "No directory at", UserWarning)

    # Production serves collected, hashed static files; this process has none.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {
            "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        },
    }


def seed() -> None:
    """Finance (who uploads and decides, and watches the team), a team lead, a
    draft invoice; only the month-plan alert rule on."""
    from accounts.models import Membership, Team, User
    from billing.models import ComputeInvoice, ComputeInvoiceLine
    from budgets.models import AlertKind, AlertRule
    from projects.models import Project

    team = Team.objects.create(name="Faults", slug="faults")
    finance = User.objects.create_user(
        email="finance@fault.example", password=None, role=User.Role.FINANCE
    )
    finance.watched_teams.add(team)
    lead = User.objects.create_user(email="lead@fault.example", password=None)
    Membership.objects.create(user=lead, team=team, role=Membership.Role.LEAD)
    for kind in AlertKind.values:
        if kind != AlertKind.BUDGET_USED:
            AlertRule.objects.create(kind=kind, is_enabled=False)
    today = datetime.now(UTC).date()
    project = Project.objects.create(
        team=team,
        owner=lead,
        slug="invoiced",
        name="Invoiced",
        kind=Project.Kind.FINE_TUNING,
        start_date=today.replace(month=1, day=1),
        end_date=today.replace(month=12, day=31),
    )
    invoice = ComputeInvoice.objects.create(
        vendor="Lambda",
        invoice_number="FAULT-6",
        issued_on=today,
        period_start=today.replace(day=1),
        period_end=today,
        currency="USD",
        project=project,
    )
    ComputeInvoiceLine.objects.create(
        invoice=invoice, description="H100 hours", amount=Decimal("1234.5000")
    )


def seed_overspent(group: str, projects: int) -> None:
    """`projects` projects of the team that have spent 90% of this month's plan."""
    from accounts.models import Team, User
    from billing.models import BillingSource, CostRecord
    from billing.services import daily_costs_rebuild
    from budgets.models import Budget, BudgetLine
    from projects.models import Project

    team, lead = (
        Team.objects.get(slug="faults"),
        User.objects.get(email__startswith="lead@"),
    )
    source, _ = BillingSource.objects.get_or_create(
        name="fault-spend", defaults={"kind": BillingSource.Kind.FOCUS}
    )
    now = datetime.now(UTC)
    today, month = now.date(), now.date().replace(day=1)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    for index in range(projects):
        project = Project.objects.create(
            team=team,
            owner=lead,
            slug=f"{group}-{index}",
            name=f"{group} {index}",
            kind=Project.Kind.FINE_TUNING,
            start_date=month,
            end_date=month + timedelta(days=27),
        )
        budget = Budget.objects.create(
            project=project,
            total=Decimal(1000),
            currency="USD",
            start_date=project.start_date,
            end_date=project.end_date,
        )
        BudgetLine.objects.create(budget=budget, month=month, amount=Decimal(1000))
        amount = Decimal(900)
        CostRecord.objects.create(
            source=source,
            project=project,
            billing_account_id=f"fault-{group}",
            billing_period_start=day.replace(day=1),
            billing_period_end=day.replace(day=1) + timedelta(days=32),
            charge_period_start=day,
            charge_period_end=day + timedelta(days=1),
            charge_category="Usage",
            billing_currency="USD",
            provider_name="AWS",
            service_name="Amazon EC2",
            billed_cost=amount,
            effective_cost=amount,
            list_cost=amount,
            contracted_cost=amount,
        )
    daily_costs_rebuild(start=today, end=today + timedelta(days=1))


# --------------------------------------------------------------------------- main


def table(rows: list[Row]) -> str:
    lines = ["| # | fault | expected | observed | verdict |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r.number} | {r.fault} | {r.expected} | {r.observed} | {r.verdict} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="fault numbers, e.g. 1,3,9 (default: all)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--server", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--database", default="spendtracker_fault_bench")
    parser.add_argument("--keep-db", action="store_true")
    args = parser.parse_args(argv)
    chosen = (
        sorted(FAULTS)
        if not args.only
        else sorted(int(number) for number in args.only.split(","))
    )

    workdir = Path(tempfile.mkdtemp(prefix="spendtracker-faults-"))
    b = Bench(args, workdir)
    rows: list[Row] = []
    started = datetime.now(UTC)
    try:
        b.redis.start()
        b.mail.set("closed")
        bench.log(f"creating and migrating {b.db.name}")
        b.db.create()
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT,
            env=b.env,
            check=True,
        )
        django_setup(b.env)
        seed()
        b.watch = b.db.connect(autocommit=True)
        b.worker.start()
        for number in chosen:
            fault, expected, inject = FAULTS[number]
            row = Row(number, fault, expected)
            bench.log(f"fault {number}: {fault}")
            began = time.monotonic()
            try:
                inject(b, row)
            except Exception as error:
                row.observed = f"the script failed: {error!r}"
                traceback.print_exc()
            finally:
                if not b.redis.answers():
                    b.redis_back()
            row.seconds = round(time.monotonic() - began, 1)
            bench.log(f"  {row.verdict}: {row.observed}")
            rows.append(row)
    finally:
        b.worker.stop()
        b.redis.stop()
        b.mail.set("closed")
        if b.watch is not None:
            b.watch.close()
        from django.db import connections

        connections.close_all()
        if not args.keep_db:
            b.db.drop()
        shutil.rmtree(workdir, ignore_errors=True)

    print(table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        results = {
            "date": started.isoformat(timespec="seconds"),
            "machine": bench.machine(),
            "code": bench.code_version(ROOT),
            "settings": {
                "CELERY_TASK_TIME_LIMIT": TIME_LIMIT,
                "DATABASE_LOCK_WAIT_SECONDS (the second import)": LOCK_WAIT,
                "EMAIL_TIMEOUT": EMAIL_TIMEOUT,
                "rows (big, small file)": [BIG_ROWS, SMALL_ROWS],
            },
            "rows": [
                {
                    "number": r.number,
                    "fault": r.fault,
                    "expected": r.expected,
                    "observed": r.observed,
                    "verdict": r.verdict,
                    "seconds": r.seconds,
                }
                for r in rows
            ],
        }
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if rows and all(r.passed for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
