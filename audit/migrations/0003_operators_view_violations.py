"""Operators read the violations the auditor found (the group is defined in console.operators)."""

from django.db import migrations

from console.operators import operators_group_ensure


def grant(apps, schema_editor):
    operators_group_ensure(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0002_periodic_task"),
        ("sagas", "0002_operators_group"),
    ]

    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
