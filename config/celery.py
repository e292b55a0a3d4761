"""The Celery application. Settings live in Django settings under the ``CELERY_`` prefix."""

import os

from celery import Celery
from celery.signals import task_postrun, task_prerun, worker_process_init, worker_process_shutdown

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")

app = Celery("backoffice")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
def _bind_task_context(task_id: str | None = None, task=None, **_: object) -> None:
    from django.db import close_old_connections

    from config.logging import bind_context

    # A connection that failed in the previous task (PostgreSQL restarted, the backend was
    # terminated) is closed here, so this task reconnects instead of failing in turn.
    close_old_connections()
    bind_context(task_id=task_id, task_name=getattr(task, "name", None))


@task_postrun.connect
def _clear_task_context(**_: object) -> None:
    from config.logging import clear_context

    clear_context()


@worker_process_init.connect
def _configure_child(**_: object) -> None:
    """A prefork child sets up tracing for itself (a no-op when it inherited a provider from
    the parent: the SDK restarts its export thread after the fork)."""
    from config.tracing import configure_tracing

    configure_tracing()


@worker_process_shutdown.connect
def _child_exit(pid: int | None = None, **_: object) -> None:
    """Multiprocess metrics: a child's live gauges stop counting when it exits."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid or os.getpid())
