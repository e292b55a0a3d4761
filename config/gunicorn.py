"""gunicorn's configuration: ``gunicorn -c config/gunicorn.py config.wsgi``.

Prometheus multiprocess mode: every worker process writes its counters to files in
``PROMETHEUS_MULTIPROC_DIR`` and /metrics adds them up. Point web and Celery workers at the
same folder, and empty it before starting them (files of a previous run would be added to
this one's counters; ``make run``'s launcher does both). It is not emptied here: a worker
already running would lose its counters. A gunicorn worker that exits is marked dead, so its
live gauges stop counting. Without the variable each gunicorn worker serves its own counters
only: set it whenever gunicorn runs more than one worker.

Tracing needs nothing here: each worker imports the application after the fork, and
config.apps sets up its tracer provider then.
"""

import os
from pathlib import Path

wsgi_app = "config.wsgi:application"
bind = os.environ.get("GUNICORN_BIND", f"0.0.0.0:{os.environ.get('PORT', '8000')}")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
timeout = 30  # IDEMPOTENCY_IN_FLIGHT_TIMEOUT_SECONDS assumes a request never lives longer

_metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")


def on_starting(server) -> None:
    if _metrics_dir:
        Path(_metrics_dir).mkdir(parents=True, exist_ok=True)


def child_exit(server, worker) -> None:
    if _metrics_dir:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
