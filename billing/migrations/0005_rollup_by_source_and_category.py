"""The rollup groups by billing source, FOCUS service category and charge category too,
so that reports read them from it. The rollup is derived data: its rows are emptied
here and rebuilt from the cost records with `python manage.py rollup_rebuild`."""

import django.db.models.deletion
from django.db import migrations, models


def empty_the_rollup(apps, schema_editor):
    apps.get_model("billing", "DailyCost").objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0004_cost_record_keys_not_indexed"),
    ]

    operations = [
        migrations.RunPython(empty_the_rollup, migrations.RunPython.noop),
        migrations.AddField(
            model_name="dailycost",
            name="source",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE,
                related_name="daily_costs",
                to="billing.billingsource",
            ),
        ),
        migrations.AddField(
            model_name="dailycost",
            name="service_category",
            field=models.CharField(blank=True, max_length=100),
        ),
        migrations.AddField(
            model_name="dailycost",
            name="charge_category",
            field=models.CharField(max_length=20),
        ),
    ]
