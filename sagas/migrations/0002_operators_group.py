"""The "Operators" group with the saga actions, dead-letter replay and read access to the
contexts' data. The function lives in console.operators so tests that flush the database can
create the same group."""

from django.db import migrations

from console.operators import OPERATORS_GROUP, operators_group_ensure


def create_group(apps, schema_editor):
    operators_group_ensure(apps)


def remove_group(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name=OPERATORS_GROUP).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("sagas", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("outbox", "0002_periodic_tasks"),
        ("orders", "0001_initial"),
        ("payments", "0002_ledger_append_only"),
        ("inventory", "0002_movements_append_only"),
        ("shipping", "0001_initial"),
    ]

    operations = [migrations.RunPython(create_group, remove_group)]
