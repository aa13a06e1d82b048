"""0013 gave every earlier run the origin `command`: an upload's or a sync's run that
was still unfinished would then be failed by the sweep instead of queued again. Their
origin is read from what they kept: an uploaded file, or a sync's `<kind> API` name."""

from django.db import migrations


def origins_restore(apps, schema_editor):
    ImportRun = apps.get_model("billing", "ImportRun")
    ImportRun.objects.exclude(upload="").update(origin="upload")
    ImportRun.objects.filter(upload="", file_name__endswith=" API").update(
        origin="sync"
    )


class Migration(migrations.Migration):
    dependencies = [("billing", "0013_importrun_origin_attempts")]

    operations = [migrations.RunPython(origins_restore, migrations.RunPython.noop)]
