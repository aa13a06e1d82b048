"""Smoke test of `make run` from a clean checkout, with nothing configured.

The working tree's files (tracked, and new files git does not ignore, so uncommitted
work counts) are copied to a temporary folder, where `make run` migrates a fresh
SQLite database, seeds the demo, and starts runserver and a Celery worker. The test
logs in over HTTP as the demo lead and finds the over-budget project on the dashboard,
then checks that seeding again duplicates no one.

`make run` uses the current virtualenv (VENV). Its install stamp lives in the temporary
folder (STAMP on make's command line, dated after the lock file), so make never runs
pip into the shared virtualenv; the test checks that before starting anything.
"""

import http.cookiejar
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
VENV = Path(sys.executable).parent.parent
STARTUP_TIMEOUT = 120
# Everything `make run` would otherwise pick up from the test process: the variables
# settings.py reads (tests/environment.py sets some of them) and make's own.
UNSET = {
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "DJANGO_DEBUG",
    "DJANGO_SECRET_KEY",
    "DJANGO_ALLOWED_HOSTS",
    "DJANGO_SETTINGS_MODULE",
    "REPORTING_CURRENCY",
    "SITE_URL",
    "MAKEFLAGS",
    "MAKELEVEL",
    "MFLAGS",
}


def checkout(destination: Path) -> None:
    """Copy the files git would commit, keeping modification times (make reads them)."""
    listing = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.decode()
    for name in filter(None, listing.split("\0")):
        source = REPO / name
        if not source.exists():  # tracked, but deleted in the working tree
            continue
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    return {**env, **extra}


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_group(proc: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM the whole process group (make, runserver and its reloader, the worker),
    then SIGKILL whatever is still there after the timeout."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc.poll()  # reap make, the group leader
            if not group_alive(proc.pid):
                break
            time.sleep(0.2)
        else:
            continue  # still alive after SIGTERM: SIGKILL
        break
    proc.wait(timeout=5)


def wait_until_up(url: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"make run exited with {proc.returncode}", pytrace=False)
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    pytest.fail(f"{url} did not answer within {STARTUP_TIMEOUT}s", pytrace=False)


def log_in(base: str, email: str, password: str) -> tuple[str, str]:
    """Log in through the form like a browser; return the final URL and page."""
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    )
    login_url = f"{base}/accounts/login/"
    with opener.open(login_url, timeout=10) as response:
        form = response.read().decode()
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form)
    assert match, "no CSRF token on the login page"
    data = urllib.parse.urlencode(
        {
            "csrfmiddlewaretoken": match.group(1),
            "username": email,  # the email field; Django's LoginView calls it username
            "password": password,
        }
    ).encode()
    request = urllib.request.Request(
        login_url, data=data, headers={"Referer": login_url}
    )
    with opener.open(request, timeout=30) as response:
        return response.url, response.read().decode()


def wait_for_alert_links(log: Path, timeout: float = 60) -> list[str]:
    """The links to alerts in the emails printed so far, once there are some."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        links = re.findall(r"http://[^\s/]+/alerts/\d+/", log.read_text())
        if links:
            return links
        time.sleep(0.5)
    return []


def user_count(database: Path) -> int:
    with sqlite3.connect(database) as connection:
        return connection.execute("select count(*) from accounts_user").fetchone()[0]


def test_make_run_serves_the_seeded_portal_from_a_clean_checkout(tmp_path):
    work = tmp_path / "checkout"
    checkout(work)
    assert not (work / "db.sqlite3").exists()
    stamp = tmp_path / "venv-installed"
    stamp.touch()
    newer = max(time.time(), (work / "requirements-dev.lock").stat().st_mtime) + 1
    os.utime(stamp, (newer, newer))
    port = free_port()
    env = clean_env(PORT=str(port), VENV=str(VENV))
    make = ["make", f"STAMP={stamp}"]

    # Question mode: exit 0 means the venv target is up to date, so no pip.
    question = subprocess.run(
        [*make, "-q", "venv"], cwd=work, env=env, capture_output=True, text=True
    )
    assert question.returncode == 0, "make would reinstall into the shared venv"

    log = tmp_path / "make-run.log"
    with log.open("wb") as output:
        proc = subprocess.Popen(
            [*make, "run"],
            cwd=work,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    passed = False
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_up(f"{base}/accounts/login/", proc)

        url, page = log_in(base, "lead@example.com", "demo1234")

        assert url == f"{base}/"
        assert "Atlas-13B pre-training" in page
        output = log.read_text()
        assert "pip install" not in output
        assert re.search(r"Demo logins \(password demo1234\)", output)
        assert re.search(r"^\s+lead@example\.com\s+Lena Ortiz$", output, re.M)
        # The worker emails the demo's alerts to the console: links to this port.
        links = wait_for_alert_links(log)
        assert links and all(link.startswith(f"{base}/") for link in links), links
        passed = True
    finally:
        stop_group(proc)
        if not passed:
            print(f"--- make run output ---\n{log.read_text()}")
    assert not group_alive(proc.pid), "make run left processes behind"

    users = user_count(work / "db.sqlite3")
    assert users >= 4
    reseed = subprocess.run(
        [str(VENV / "bin" / "python"), "manage.py", "seed_demo"],
        cwd=work,
        env=clean_env(DJANGO_DEBUG="true"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert reseed.returncode == 0, reseed.stdout + reseed.stderr
    assert user_count(work / "db.sqlite3") == users
