"""The operators' audit log is evidence: PostgreSQL refuses to change or delete its rows."""

from django.db import migrations

from common.migrations import append_only


class Migration(migrations.Migration):
    dependencies = [("sagas", "0002_operators_group")]

    operations = [append_only("sagas_auditlog", function="refuse_audit_change", drop_function=True)]
