"""Django REST framework's tokens were kept in clear (table authtoken_token). Each
becomes an ApiToken holding only its SHA-256, so the scripts using it go on working
(`Authorization: Token <key>` or `Bearer <key>`) for a year; the clear keys are then
deleted with the table."""

import hashlib
from datetime import timedelta

from django.db import migrations
from django.utils import timezone


def tokens_hash(apps, schema_editor):
    connection = schema_editor.connection
    if "authtoken_token" not in connection.introspection.table_names():
        return
    ApiToken = apps.get_model("projects", "ApiToken")
    with connection.cursor() as cursor:
        cursor.execute("SELECT key, user_id FROM authtoken_token")
        rows = cursor.fetchall()
    expires = timezone.now() + timedelta(days=365)
    ApiToken.objects.bulk_create(
        ApiToken(
            user_id=user_id,
            name="API token (before hashed tokens)",
            kind="personal",
            prefix=key[:12],
            key_hash=hashlib.sha256(key.encode()).hexdigest(),
            expires_at=expires,
        )
        for key, user_id in rows
    )
    schema_editor.execute("DROP TABLE authtoken_token")


class Migration(migrations.Migration):
    dependencies = [("projects", "0004_api_token")]

    operations = [migrations.RunPython(tokens_hash, migrations.RunPython.noop)]
