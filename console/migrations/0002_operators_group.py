"""The Operators group, checked again once the action log belongs to the console: it reads
the log as console.view_auditlog (console/operators.py)."""

from django.db import migrations

from console.operators import operators_group_ensure


def ensure_group(apps, schema_editor):
    operators_group_ensure(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("console", "0001_initial"),
        ("sagas", "0006_auditlog_to_console"),
    ]

    operations = [migrations.RunPython(ensure_group, migrations.RunPython.noop)]
