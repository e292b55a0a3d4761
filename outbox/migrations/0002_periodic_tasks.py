"""Beat's schedule lives in the database (django-celery-beat), created here so that a fresh
install drains the outbox, sweeps sagas and purges old messages without any manual step."""

from django.db import migrations

SCHEDULE = [
    # (name, task, every seconds)
    ("outbox relay", "outbox.relay", 1),
    ("saga sweeper", "sagas.sweep", 5),
    ("outbox retention purge", "outbox.purge", 3600),
]


def create_schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    for name, task, seconds in SCHEDULE:
        interval, _ = IntervalSchedule.objects.get_or_create(every=seconds, period="seconds")
        PeriodicTask.objects.update_or_create(
            name=name,
            defaults={"task": task, "interval": interval, "enabled": True, "expire_seconds": max(seconds * 5, 5)},
        )


def remove_schedule(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name__in=[name for name, _, _ in SCHEDULE]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("outbox", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_schedule, remove_schedule)]
