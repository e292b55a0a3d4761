"""The Celery application. Settings live in Django settings under the ``CELERY_`` prefix."""

import os
from pathlib import Path

from celery import Celery
from celery.signals import task_postrun, task_prerun, worker_init, worker_process_init, worker_process_shutdown

from common.heartbeat import WorkerHeartbeat
from console.alert_watch import WorkerAlertWatch

# No default for DJANGO_SETTINGS_MODULE: a worker or beat started without it refuses to start
# (Django says the settings are not configured) rather than run the development settings. Not
# set here either, since every process that imports this package (the launcher, the tools)
# would then hand it on to its children.

app = Celery("backoffice")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# The worker's heartbeat, renewed from the consumer's event loop (common/heartbeat.py).
app.steps["consumer"].add(WorkerHeartbeat)
# The alert check, which also notices a vanished beat (console/alert_watch.py).
app.steps["consumer"].add(WorkerAlertWatch)


@task_prerun.connect
def _bind_task_context(task_id: str | None = None, task=None, **_: object) -> None:
    from django.db import close_old_connections

    from common.logging import bind_context

    # A connection that failed in the previous task (PostgreSQL restarted, the backend was
    # terminated) is closed here, so this task reconnects instead of failing in turn.
    close_old_connections()
    bind_context(task_id=task_id, task_name=getattr(task, "name", None))


@task_postrun.connect
def _clear_task_context(**_: object) -> None:
    from common.logging import clear_context

    clear_context()


@worker_init.connect
def _yield_to_the_web(**_: object) -> None:
    """The worker (and the pool it forks) runs at a lower CPU priority than the web, by
    WORKER_NICE (settings): on a machine they share, a burst of orders is accepted at the pace
    of the web and the sagas catch up after it, instead of both slowing down together. The outbox
    holds the work meanwhile. Nothing changes on a machine with CPU to spare."""
    from django.conf import settings

    lower_cpu_priority(settings.WORKER_NICE)


def lower_cpu_priority(nice: int) -> None:
    """Lower this process's CPU priority (and its future children's) by ``nice``.

    Linux's autogroup scheduling (on by default on desktops and many servers) shares the CPU
    between sessions first, and a nice value then counts only within its session. A process that
    leads its own session (started with setsid, as the harnesses start the worker) also sets its
    session's nice, or its own would change nothing against the web's.
    """
    if nice <= 0:
        return
    os.nice(nice)
    if os.getsid(0) == os.getpid():
        try:
            Path("/proc/self/autogroup").write_text(str(min(nice, 19)))
        except OSError:  # no autogroup scheduling here: the process's nice is all there is
            pass


@worker_process_init.connect
def _configure_child(**_: object) -> None:
    """A prefork child sets up tracing for itself (a no-op when it inherited a provider from
    the parent: the SDK restarts its export thread after the fork)."""
    from common.tracing import configure_tracing

    configure_tracing()


@worker_process_shutdown.connect
def _child_exit(pid: int | None = None, **_: object) -> None:
    """Multiprocess metrics: a child's live gauges stop counting when it exits."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid or os.getpid())
