"""A covering index for the dashboard's count of sagas by state over a time window
(an index-only scan instead of a scan of the table). Built concurrently: the saga table is
written by every worker, and a plain CREATE INDEX would block those writes while it builds."""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("sagas", "0003_auditlog_append_only"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="sagainstance",
            index=models.Index(fields=["created_at"], include=("state",), name="saga_created_state_idx"),
        ),
    ]
