"""The operator action log now belongs to the console (console/migrations/0001_initial.py):
the engine forgets the model, the table stays."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("sagas", "0005_saga_traceparent"),
        ("console", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=[migrations.DeleteModel(name="AuditLog")], database_operations=[])
    ]
