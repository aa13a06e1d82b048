"""The rollup counts the cost records behind each row, for the cost explorer. The
rollup is derived data: its rows are emptied here and rebuilt from the cost records
with `python manage.py rollup_rebuild`, so that no row claims zero records."""

from django.db import migrations, models


def empty_the_rollup(apps, schema_editor):
    apps.get_model("billing", "DailyCost").objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0005_rollup_by_source_and_category"),
    ]

    operations = [
        migrations.RunPython(empty_the_rollup, migrations.RunPython.noop),
        migrations.AddField(
            model_name="dailycost",
            name="cost_lines",
            field=models.PositiveIntegerField(default=0),
        ),
    ]
