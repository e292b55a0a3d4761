"""Where the alert check runs: on the worker (a consumer bootstep on the event loop's timer) and
on beat (its scheduler's tick), each every ALERT_CHECK_SECONDS, in a thread of its own so that a
slow receiver never holds the loop. Not a periodic task: a dead worker runs no task and a dead
beat schedules none, so each process watches for the other's heartbeat itself.

Imports nothing of Django's models at import time: config.celery loads it before Django is set up.
"""

from __future__ import annotations

import logging
import threading
import time

from celery import bootsteps

logger = logging.getLogger(__name__)

_running = threading.Lock()
_last_run = float("-inf")


def alerts_run() -> None:
    """One check and one round of sending; a failure is logged, never raised to the caller."""
    from django.db import connection

    from console.alert_delivery import alerts_send
    from console.alerts import alerts_check

    try:
        alerts_check()
        alerts_send()
    except Exception:  # alerting must never take its host process down
        logger.exception("alert check failed")
    finally:
        connection.close()


def alert_watch_tick() -> None:
    """Start a check in the background when one is due and none is running."""
    from django.conf import settings

    global _last_run
    if not settings.ALERT_WATCH_ENABLED:
        return
    now = time.monotonic()
    if now - _last_run < settings.ALERT_CHECK_SECONDS or not _running.acquire(blocking=False):
        return
    _last_run = now

    def run() -> None:
        try:
            alerts_run()
        finally:
            _running.release()

    threading.Thread(target=run, name="alert-check", daemon=True).start()


class WorkerAlertWatch(bootsteps.StartStopStep):
    """The worker's alert check, on the consumer's timer (it notices a vanished beat)."""

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, consumer, **kwargs) -> None:
        super().__init__(consumer, **kwargs)
        self.timer_entry = None

    def start(self, consumer) -> None:
        self.timer_entry = consumer.timer.call_repeatedly(1.0, alert_watch_tick)

    def stop(self, consumer) -> None:
        if self.timer_entry is not None:
            self.timer_entry.cancel()
            self.timer_entry = None
