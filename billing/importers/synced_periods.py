"""What the bucket fetchers (S3, Azure Blob) share: which months a sync looks at, and
what it remembers of the files it loaded per period (`SEEN_KEY` in the source's
config: a digest of the files and the import run that loaded them), so that an
unchanged period is not downloaded again."""

import os
from datetime import datetime

from dateutil.relativedelta import relativedelta

from billing.models import BillingSource, ImportRun

SEEN_KEY = "seen_etags"


def months_since(*, since: datetime, now: datetime) -> list[datetime]:
    """Month starts (UTC) from the one containing `since` to the current one."""
    month = since.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    months = []
    while month <= now:
        months.append(month)
        month += relativedelta(months=1)
    return months


def common_folder(keys: list[str]) -> str:
    """The deepest folder holding every key: one listing gives all their ETags."""
    shared = os.path.commonprefix(keys)
    return shared[: shared.rfind("/") + 1]


def still_loaded(source: BillingSource, period: str, seen: object, digest: str) -> bool:
    """Whether the period holds what a sync loaded from these very files: not if a
    later import (a file imported into this source) restated it since."""
    if not isinstance(seen, dict) or seen.get("files") != digest:
        return False
    later = source.import_runs.filter(
        status=ImportRun.Status.IMPORTED, pk__gt=seen.get("run", 0)
    )
    return not any(
        period in periods for periods in later.values_list("billing_periods", flat=True)
    )


def remember_seen(source: BillingSource, loaded: dict[str, dict]) -> None:
    """Record what this sync loads, in the import's transaction, so that a failed or
    rolled-back import records nothing. Periods that left the window or lost their
    manifest are forgotten, so the config stays small."""
    row = BillingSource.objects.filter(pk=source.pk)
    config = row.values_list("config", flat=True).get() or {}
    row.update(config={**config, SEEN_KEY: loaded})
