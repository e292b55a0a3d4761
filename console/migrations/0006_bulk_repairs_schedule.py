"""Beat advances bulk repairs every second (console.bulk_repairs): the canary's outcome is
seen within a second of the saga's, and the rest is sent at its rate. Created here so that a
fresh install needs no manual step (as outbox/migrations/0002_periodic_tasks.py)."""

from django.db import migrations

NAME = "bulk repairs"
TASK = "console.advance_bulk_repairs"
EVERY_SECONDS = 1


def create_schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    interval, _ = IntervalSchedule.objects.get_or_create(every=EVERY_SECONDS, period="seconds")
    PeriodicTask.objects.update_or_create(
        name=NAME,
        # A tick that could not start in time is dropped: the next one does all it would have.
        defaults={"task": TASK, "interval": interval, "enabled": True, "expire_seconds": 5},
    )


def remove_schedule(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("console", "0005_bulk_repairs"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedule, remove_schedule)]
