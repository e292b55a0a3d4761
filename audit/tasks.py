"""Celery entry point of the auditor. Thin: the logic lives in audit.services."""

from celery import shared_task

from audit.services import audit_run


# A full sweep (once a day, inside one of these runs) reads every order: it gets a longer
# time limit than the 60 s default, or it would be killed every time and never complete.
@shared_task(name="audit.run", ignore_result=True, soft_time_limit=900, time_limit=960)
def run() -> dict[str, object]:
    # wait=False: when the previous run (say the daily sweep) is still going, skip this tick.
    report = audit_run(wait=False)
    return {"skipped": report.skipped, "full": report.full, "violations": report.counts}
