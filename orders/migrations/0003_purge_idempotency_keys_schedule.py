"""Beat purges expired idempotency keys every ten minutes; created here so that a fresh
install needs no manual step (the same pattern as outbox/migrations/0002_periodic_tasks.py)."""

from django.db import migrations

NAME = "idempotency keys purge"
TASK = "orders.purge_idempotency_keys"
EVERY_SECONDS = 600


def create_schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    interval, _ = IntervalSchedule.objects.get_or_create(every=EVERY_SECONDS, period="seconds")
    PeriodicTask.objects.update_or_create(
        name=NAME,
        # A purge that could not start within its own interval is skipped; the next one catches up.
        defaults={"task": TASK, "interval": interval, "enabled": True, "expire_seconds": EVERY_SECONDS},
    )


def remove_schedule(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("orders", "0002_idempotencykey"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedule, remove_schedule)]
