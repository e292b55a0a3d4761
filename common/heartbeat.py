"""Heartbeats of the worker and beat: how the dashboard knows, within seconds, that one is gone.

Each live process keeps a Redis key of its own (``backoffice:heartbeat:<role>:<name>``) written
every HEARTBEAT_INTERVAL_SECONDS with a time to live of HEARTBEAT_TTL_SECONDS: a process that
dies, hangs or loses Redis stops renewing it and the key expires by itself. Nothing else can tell:
the sweeper, which would notice sagas going unanswered, runs on the worker that died, and the
API goes on accepting orders into the outbox.

The worker beats from its consumer's event loop (a consumer bootstep on the loop's timer) and
beat from its scheduler's tick, not from a thread of their own: a process whose loop is stuck
is as good as dead, and must look it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import dataclass

from celery import bootsteps
from django.conf import settings
from redis.exceptions import RedisError

from common.redis import get_redis

logger = logging.getLogger(__name__)

KEY_PREFIX = "backoffice:heartbeat"
WORKER, BEAT = "worker", "beat"
ROLES = (WORKER, BEAT)


@dataclass(frozen=True)
class Heartbeat:
    role: str
    name: str
    pid: int
    host: str
    seconds_ago: float


@dataclass(frozen=True)
class Liveness:
    """What the heartbeats say: the live processes by role, or that Redis could not be asked."""

    processes: dict[str, list[Heartbeat]]
    error: str = ""

    def alive(self, role: str) -> bool:
        return bool(self.processes.get(role))

    @property
    def missing(self) -> list[str]:
        """Roles with no live process (all of them when Redis could not be read)."""
        return [role for role in ROLES if not self.alive(role)]


def heartbeat_write(*, role: str, name: str) -> bool:
    """Renew this process's heartbeat; False (logged) when Redis is unreachable."""
    record = {"pid": os.getpid(), "host": socket.gethostname(), "at": time.time()}
    try:
        get_redis().set(f"{KEY_PREFIX}:{role}:{name}", json.dumps(record), ex=settings.HEARTBEAT_TTL_SECONDS)
        return True
    except (RedisError, OSError) as exc:
        # The broker is Redis too: it is down or restarting, and the process reconnects to both.
        logger.warning("heartbeat not written", extra={"role": role, "error": str(exc)})
        return False


def heartbeat_clear(*, role: str, name: str) -> None:
    """Remove this process's heartbeat on a clean stop, so it is not counted until it expires."""
    try:
        get_redis().delete(f"{KEY_PREFIX}:{role}:{name}")
    except (RedisError, OSError):
        pass


def liveness() -> Liveness:
    """The worker and beat processes whose heartbeat has not expired."""
    now = time.time()
    processes: dict[str, list[Heartbeat]] = {role: [] for role in ROLES}
    try:
        redis = get_redis()
        keys = list(redis.scan_iter(match=f"{KEY_PREFIX}:*", count=100))
        values = redis.mget(keys) if keys else []
    except (RedisError, OSError) as exc:
        return Liveness(processes=processes, error=f"Redis unreachable: {type(exc).__name__}: {exc}")
    for key, value in zip(keys, values, strict=True):
        if value is None:  # expired between the scan and the read
            continue
        _, _, role, name = key.decode().split(":", 3)
        record = json.loads(value)
        processes.setdefault(role, []).append(
            Heartbeat(role=role, name=name, pid=record["pid"], host=record["host"], seconds_ago=now - record["at"])
        )
    for beats in processes.values():
        beats.sort(key=lambda beat: beat.name)
    return Liveness(processes=processes)


class WorkerHeartbeat(bootsteps.StartStopStep):
    """A consumer bootstep: the worker's heartbeat, on the event loop's timer.

    Started once the consumer is connected and stopped whenever it restarts (a lost broker), so
    a worker that cannot reach the broker, or whose loop is stuck, stops beating.
    """

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, consumer, **kwargs) -> None:
        super().__init__(consumer, **kwargs)
        self.timer_entry = None
        self.name = consumer.hostname

    def start(self, consumer) -> None:
        heartbeat_write(role=WORKER, name=self.name)
        self.timer_entry = consumer.timer.call_repeatedly(
            settings.HEARTBEAT_INTERVAL_SECONDS, heartbeat_write, kwargs={"role": WORKER, "name": self.name}
        )

    def stop(self, consumer) -> None:
        if self.timer_entry is not None:
            self.timer_entry.cancel()
            self.timer_entry = None

    def shutdown(self, consumer) -> None:
        self.stop(consumer)
        heartbeat_clear(role=WORKER, name=self.name)
