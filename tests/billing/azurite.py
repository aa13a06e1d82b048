"""Azurite, Microsoft's local Azure Storage emulator, for tests: its blob service
alone, on 127.0.0.1 and a free port, keeping its data in a temporary folder, without
telemetry. The npm package is pinned by tests/package-lock.json; .ci/run installs it
in .run/azurite. A missing install fails the tests that need it: nothing skips."""

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

AZURITE = (
    Path(__file__).resolve().parents[2] / ".run/azurite/node_modules/.bin/azurite-blob"
)
INSTALL = (
    "mkdir -p .run/azurite && cp tests/package.json tests/package-lock.json "
    ".run/azurite/ && npm ci --prefix .run/azurite --ignore-scripts"
)
# The account and key every Azurite has, published in its documentation: no secret.
ACCOUNT = "devstoreaccount1"
KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/"
    "KBHBeksoGMGw=="
)
STARTUP_SECONDS = 30


@contextmanager
def azurite_blob(folder: Path) -> Iterator[str]:
    """A running Azurite blob service; yields its account URL."""
    if not AZURITE.exists():
        pytest.fail(f"Azurite is not installed; install it with: {INSTALL}")
    port = _free_port()
    command = [
        str(AZURITE),
        *("--blobHost", "127.0.0.1", "--blobPort", str(port)),
        *("--location", str(folder)),
        "--disableTelemetry",
        "--disableProductStyleUrl",  # the account is the URL's first path segment
        "--skipApiVersionCheck",  # the SDK may speak a newer API than Azurite knows
        "--silent",
    ]
    server = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        _wait_until_listening(server, port)
        yield f"http://127.0.0.1:{port}/{ACCOUNT}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until_listening(server: subprocess.Popen, port: int) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            output = server.stdout.read() if server.stdout else ""
            pytest.fail(f"Azurite stopped as it started: {output}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"Azurite did not listen on 127.0.0.1:{port} in {STARTUP_SECONDS}s")
