from celery import shared_task

from sagas.orchestrator import saga_sweep


@shared_task(name="sagas.sweep", ignore_result=True)
def sweep() -> dict[str, int]:
    return saga_sweep()
