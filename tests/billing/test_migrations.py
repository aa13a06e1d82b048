"""Data migrations of billing: what they do to rows written before them."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("billing", "0013_importrun_origin_attempts")]
AFTER = [("billing", "0014_importrun_origin_of_earlier_runs")]


@pytest.mark.django_db(transaction=True)
def test_earlier_runs_get_the_origin_of_their_upload_or_sync_back():
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    ImportRun = executor.loader.project_state(BEFORE).apps.get_model(
        "billing", "ImportRun"
    )
    upload = ImportRun.objects.create(source_name="s", upload="uploads/a.csv")
    sync = ImportRun.objects.create(source_name="s", file_name="openai API")
    command = ImportRun.objects.create(source_name="s", file_name="cur.csv.gz")

    executor = MigrationExecutor(connection)  # the graph as migrated
    executor.loader.build_graph()
    executor.migrate(AFTER)

    origins = dict(
        ImportRun.objects.filter(pk__in=[upload.pk, sync.pk, command.pk]).values_list(
            "pk", "origin"
        )
    )
    assert origins == {upload.pk: "upload", sync.pk: "sync", command.pk: "command"}
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
