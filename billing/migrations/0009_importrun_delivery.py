import django.db.models.deletion
from django.db import migrations, models

import core.currencies


def name_runs_by_their_source(apps, schema_editor):
    ImportRun = apps.get_model("billing", "ImportRun")
    BillingSource = apps.get_model("billing", "BillingSource")
    for source in BillingSource.objects.all():
        ImportRun.objects.filter(source=source).update(source_name=source.name)


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0008_provider_invoices_and_accruals"),
    ]

    operations = [
        migrations.AddField(
            model_name="importrun",
            name="source_name",
            field=models.CharField(default="", max_length=100),
            preserve_default=False,
        ),
        migrations.RunPython(name_runs_by_their_source, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="importrun",
            name="source",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="import_runs",
                to="billing.billingsource",
            ),
        ),
        migrations.AlterField(
            model_name="importrun",
            name="file_name",
            field=models.CharField(
                blank=True,
                help_text="The delivery: a file, folder or zip.",
                max_length=500,
            ),
        ),
        migrations.AddField(
            model_name="importrun",
            name="files",
            field=models.JSONField(
                blank=True,
                default=list,
                help_text='Each file of the delivery: [{"name": ..., "sha256": ...}].',
            ),
        ),
        migrations.AlterField(
            model_name="importrun",
            name="upload",
            field=models.FileField(
                blank=True,
                help_text="The delivery as uploaded in the portal (several files: a "
                "zip of them), kept for audit.",
                upload_to="imports/%Y/%m/",
            ),
        ),
        migrations.AddField(
            model_name="importrun",
            name="period",
            field=models.DateField(
                blank=True,
                help_text="The billing month of a delivery without rows (its first "
                "day).",
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="importrun",
            name="currency",
            field=models.CharField(
                blank=True,
                help_text="The currency of a file that names none.",
                max_length=3,
                validators=[core.currencies.validate_currency_code],
            ),
        ),
        migrations.AddField(
            model_name="importrun",
            name="allow_overlap",
            field=models.BooleanField(
                default=False,
                help_text="Import even if another source holds the same files or "
                "billing accounts and periods.",
            ),
        ),
        migrations.AddField(
            model_name="importrun",
            name="replaced",
            field=models.JSONField(
                blank=True,
                default=dict,
                help_text='What the import removed: {"rows": N, "billed": {...}, '
                '"effective": {...}}.',
            ),
        ),
        migrations.AddField(
            model_name="importrun",
            name="warnings",
            field=models.JSONField(blank=True, default=list),
        ),
    ]
