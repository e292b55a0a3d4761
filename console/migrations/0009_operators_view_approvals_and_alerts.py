"""The Operators group may read four-eyes requests, incidents and alert deliveries."""

from django.db import migrations

from console.operators import operators_group_ensure


def ensure_group(apps, schema_editor):
    operators_group_ensure(apps)


class Migration(migrations.Migration):
    dependencies = [("console", "0008_alert_incidents")]

    operations = [migrations.RunPython(ensure_group, migrations.RunPython.noop)]
