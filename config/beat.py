"""Beat's scheduler: django-celery-beat's database scheduler, writing beat's heartbeat as it ticks."""

import os
import socket
import time

from django.conf import settings
from django_celery_beat.schedulers import DatabaseScheduler

from common.heartbeat import BEAT, heartbeat_clear, heartbeat_write
from console.alert_watch import alert_watch_tick


class Scheduler(DatabaseScheduler):
    """Beats from the tick, so a beat whose loop is stuck stops looking alive (common/heartbeat.py)."""

    def __init__(self, *args, **kwargs) -> None:
        self.heartbeat_name = f"{socket.gethostname()}:{os.getpid()}"
        self._last_heartbeat = float("-inf")
        super().__init__(*args, **kwargs)

    def tick(self, *args, **kwargs) -> float:
        now = time.monotonic()
        if now - self._last_heartbeat >= settings.HEARTBEAT_INTERVAL_SECONDS:
            self._last_heartbeat = now
            heartbeat_write(role=BEAT, name=self.heartbeat_name)
        # The alert check, in a thread of its own; it notices a vanished worker (console/alerts.py).
        alert_watch_tick()
        # Wake at least once per heartbeat interval, even with nothing due before then.
        return min(super().tick(*args, **kwargs), settings.HEARTBEAT_INTERVAL_SECONDS)

    def close(self) -> None:
        super().close()
        heartbeat_clear(role=BEAT, name=self.heartbeat_name)
