"""The Operators group may discard dead letters with a reason (outbox.discard_deadletter)."""

from django.db import migrations

from console.operators import operators_group_ensure


def ensure_group(apps, schema_editor):
    operators_group_ensure(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("console", "0003_operators_handle_violations"),
        ("outbox", "0004_deadletter_discard"),
    ]

    operations = [migrations.RunPython(ensure_group, migrations.RunPython.noop)]
