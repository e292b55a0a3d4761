"""The operator action log moves from the engine to the console: the table stays where it is
(``sagas_auditlog``, with its append-only trigger); only Django's record of which app owns it
changes, and the content type with its permissions follows, so the Operators group keeps
reading it (console/migrations/0002_operators_group.py checks the group once the engine has
forgotten the model)."""

import django.db.models.deletion
import django.db.models.functions.datetime
from django.conf import settings
from django.db import migrations, models



def relabel_content_type(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    ContentType.objects.filter(app_label="sagas", model="auditlog").update(app_label="console")


def unlabel_content_type(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    ContentType.objects.filter(app_label="console", model="auditlog").update(app_label="sagas")


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("sagas", "0005_saga_traceparent"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("audit", "0005_provider_books"),
        ("orders", "0006_hash_api_tokens"),
        ("payments", "0004_provider_books"),
        ("inventory", "0003_step_outcomes"),
        ("shipping", "0002_step_outcomes"),
        ("outbox", "0003_unpublished_aggregate_index"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="AuditLog",
                    fields=[
                        ("id", models.BigAutoField(primary_key=True, serialize=False)),
                        ("actor_name", models.CharField(max_length=150)),
                        ("action", models.CharField(max_length=50)),
                        ("target", models.CharField(blank=True, max_length=100)),
                        ("reason", models.TextField()),
                        ("outcome", models.TextField()),
                        ("created_at", models.DateTimeField(db_default=django.db.models.functions.datetime.Now())),
                        (
                            "actor",
                            models.ForeignKey(
                                null=True, on_delete=django.db.models.deletion.PROTECT, to=settings.AUTH_USER_MODEL
                            ),
                        ),
                        (
                            "saga",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="audit",
                                to="sagas.sagainstance",
                            ),
                        ),
                    ],
                    options={"ordering": ["-id"], "db_table": "sagas_auditlog"},
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(relabel_content_type, unlabel_content_type),
    ]
