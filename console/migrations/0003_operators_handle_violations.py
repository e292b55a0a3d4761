"""Operators acknowledge and resolve the auditor's violations (console/operators.py)."""

from django.db import migrations

from console.operators import operators_group_ensure


def ensure_group(apps, schema_editor):
    operators_group_ensure(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("console", "0002_operators_group"),
        ("audit", "0006_violation_lifecycle"),
    ]

    operations = [migrations.RunPython(ensure_group, migrations.RunPython.noop)]
