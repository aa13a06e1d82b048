"""The README's backup and restore (pg_dump, pg_restore) keeps every figure: the
check script restores a dump into a new database and compares them."""

import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from billing.models import CostRecord
from tests.billing.importing import run_import
from tests.budgets.test_alert_workers import database_url
from tests.conftest import make_budget, make_project, make_spend
from tests.data import FOCUS_REAL

pytestmark = pytest.mark.django_db(transaction=True)

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "backup_restore_check.py"


@pytest.fixture
def organisation(world):
    """A project with a budget and spend, and the real FOCUS export."""
    project = make_project(
        world.team, world.lead, "vienna", start_date=date(2024, 9, 1)
    )
    make_budget(project, {date(2024, 9, 1): "10", date(2024, 10, 1): "20"})
    project.allocation_rules.create(
        match_on="tag", tag_key="business_unit", value="ViennaAI"
    )
    code, result = run_import(FOCUS_REAL, source="focus")
    assert code == 0, result["error"]
    assert CostRecord.objects.filter(project=project).exists()
    make_spend(project, date(2024, 10, 1), "12.50")  # ViennaAI's effective cost is 0
    return project


def check(*options: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--as-of", "2024-10-15", *options],
        env={**os.environ, "DATABASE_URL": database_url()},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_restored_backup_has_every_projects_figures(organisation, tmp_path):
    dump = tmp_path / "backup.dump"
    result = check("--dump", str(dump))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "the restore is the same" in result.stdout
    assert dump.stat().st_size > 0


def test_a_restore_that_lost_the_rollups_is_caught(organisation):
    # billing_dailycost and billing_monthlycost, which every figure reads.
    result = check("--pg-dump-option=--exclude-table-data=billing_*cost")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "DIFFERS project vienna" in result.stdout
    assert "DIFFERS table billing_dailycost" in result.stdout
    assert "the restore differs" in result.stdout
