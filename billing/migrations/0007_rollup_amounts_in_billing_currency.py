"""The rollup keeps billed and effective cost in the billing currency too, and rounds
each day's conversion once per project and currency, so that the monthly report
reconciles exactly with the cost records. The rollup is derived data: its rows are
emptied here and rebuilt from the cost records with `python manage.py rollup_rebuild`,
so that no row claims amounts it was not built with."""

from decimal import Decimal

from django.db import migrations, models


def empty_the_rollup(apps, schema_editor):
    apps.get_model("billing", "DailyCost").objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0006_dailycost_cost_lines"),
    ]

    operations = [
        migrations.RunPython(empty_the_rollup, migrations.RunPython.noop),
        migrations.AddField(
            model_name="dailycost",
            name="billed_in_billing_currency",
            field=models.DecimalField(
                decimal_places=11, default=Decimal("0"), max_digits=30
            ),
        ),
        migrations.AddField(
            model_name="dailycost",
            name="effective_in_billing_currency",
            field=models.DecimalField(
                decimal_places=11, default=Decimal("0"), max_digits=30
            ),
        ),
    ]
