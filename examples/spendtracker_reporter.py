"""Report a training run to Spendtracker as it goes: its start, heartbeats, its stop.

    reporter = RunReporter("https://spend.example.com", token, run_id=42)
    reporter.start(gpu_count=512, gpu_type="H100", price_per_gpu_hour="2.49")
    reporter.heartbeat(units_done=1200, unit="steps")
    reporter.stop()

Only `requests` is needed. Each event carries an idempotency key, so a send that timed
out is sent again with the same key and never counted twice. Telemetry must never stop
training: a report that cannot be delivered is logged and dropped, unless the reporter
was made with `strict=True` (as in tests).
"""

import logging
import time
import uuid
from decimal import Decimal

import requests

logger = logging.getLogger("spendtracker")


class ReportRefused(Exception):
    """Spendtracker refused the event (a 4xx): resending it would not help."""


class RunReporter:
    def __init__(
        self,
        base_url: str,
        token: str,
        run_id: int,
        *,
        timeout: float = 10.0,
        attempts: int = 3,
        strict: bool = False,
        session: requests.Session | None = None,
    ) -> None:
        self.url = f"{base_url.rstrip('/')}/api/v1/runs/{run_id}/events/"
        self.timeout, self.attempts, self.strict = timeout, attempts, strict
        self.session = session or requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        # Keys unique to this reporter: a restarted script sends new ones.
        self._prefix, self._sent = uuid.uuid4().hex[:12], 0

    def start(
        self,
        *,
        gpu_count: int,
        gpu_type: str = "",
        price_per_gpu_hour: Decimal | str | None = None,
    ) -> dict | None:
        return self.send(
            "start",
            gpu_count=gpu_count,
            gpu_type=gpu_type,
            price_per_gpu_hour=price_per_gpu_hour,
        )

    def heartbeat(
        self,
        *,
        units_done: float | Decimal | None = None,
        unit: str | None = None,
        gpu_count: int | None = None,
        price_per_gpu_hour: Decimal | str | None = None,
    ) -> dict | None:
        return self.send(
            "heartbeat",
            units_done=units_done,
            unit=unit,
            gpu_count=gpu_count,
            price_per_gpu_hour=price_per_gpu_hour,
        )

    def stop(self, outcome: str = "completed") -> dict | None:
        return self.send("stop", outcome=outcome)

    def send(self, kind: str, **fields) -> dict | None:
        """Post one event; the recorded event, or None when it could not be sent
        (logged; raised instead with `strict`)."""
        self._sent += 1
        body = {"kind": kind, "idempotency_key": f"{self._prefix}-{self._sent}"}
        body |= {
            name: str(value) if isinstance(value, Decimal) else value
            for name, value in fields.items()
            if value not in (None, "")
        }
        try:
            return self._post(body)
        except (ReportRefused, requests.RequestException) as error:
            if self.strict:
                raise
            logger.warning(
                "Spendtracker: the %s event was not recorded: %s", kind, error
            )
            return None

    def _post(self, body: dict) -> dict:
        for attempt in range(1, self.attempts + 1):
            try:
                answer = self.session.post(self.url, json=body, timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout):
                if attempt == self.attempts:
                    raise
            else:
                if answer.status_code == 201:
                    return answer.json()
                lost = attempt > 1 and answer.status_code == 409
                if lost and "recorded already" in answer.text:
                    # An earlier attempt got through before its answer was lost.
                    return {"kind": body["kind"], "replayed": True}
                if answer.status_code < 500:
                    raise ReportRefused(f"{answer.status_code}: {answer.text[:500]}")
                if attempt == self.attempts:
                    answer.raise_for_status()
            time.sleep(min(2**attempt, 30))
        raise AssertionError("unreachable")
