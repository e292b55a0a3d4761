"""Beat runs the consistency audit every 30 seconds; created here so that a fresh install
needs no manual step (the same pattern as outbox/migrations/0002_periodic_tasks.py). Each run
is incremental, and a full sweep whenever the last one is more than 24 hours old."""

from django.db import migrations

NAME = "consistency audit"
TASK = "audit.run"
EVERY_SECONDS = 30


def create_schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    interval, _ = IntervalSchedule.objects.get_or_create(every=EVERY_SECONDS, period="seconds")
    PeriodicTask.objects.update_or_create(
        name=NAME,
        # A run that could not start within its own interval is dropped; the next one covers
        # everything it would have (the watermark has not moved).
        defaults={"task": TASK, "interval": interval, "enabled": True, "expire_seconds": EVERY_SECONDS},
    )


def remove_schedule(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedule, remove_schedule)]
