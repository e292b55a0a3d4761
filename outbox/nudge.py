"""Waking the relay after a commit: a Redis key debounces the nudges, and the relay task is
sent by name (the relay's code is the worker's business, not the publisher's)."""

import logging
from typing import Any

from celery import current_app as celery_app
from django.conf import settings
from kombu.exceptions import KombuError
from redis.exceptions import RedisError

from common.redis import get_redis
from outbox.broker import broker_countdown

logger = logging.getLogger(__name__)

NUDGE_KEY = "outbox:relay-nudge"
RELAY_TASK = "outbox.relay"


def nudge_relay(*, countdown: float | None = None) -> None:
    """Wake the relay right after a commit, at most once per burst of commits.

    The relay deletes the key when it starts and drains until nothing is left, so a commit
    that lands after that sets the key again and gets its own nudge: no wake-up is lost. A lost
    nudge (Redis down, task dropped) costs only latency: beat runs the relay every second.
    """
    try:
        if countdown:
            # A delayed message (a retry with backoff) wakes the relay when it becomes due.
            send_relay_task(countdown=broker_countdown(countdown + 0.05))
        elif get_redis().set(NUDGE_KEY, "1", nx=True, px=settings.OUTBOX_NUDGE_DEBOUNCE_MS):
            send_relay_task()
    except (RedisError, OSError, KombuError) as exc:  # a broker that is down: kombu's OperationalError
        # Never raised to the caller: it runs after a commit, whose work is done and must be
        # answered as done; the relay's beat schedule sends what this nudge would have hurried.
        logger.warning("outbox relay nudge failed; beat will drain the outbox", extra={"error": str(exc)})


def send_relay_task(**options: Any) -> None:
    celery_app.send_task(RELAY_TASK, **options)


def nudge_clear() -> None:
    """The relay starts draining: a commit after this point nudges it again."""
    try:
        get_redis().delete(NUDGE_KEY)
    except Exception:  # noqa: BLE001 - the nudge key is an optimisation, never a reason to stop
        logger.warning("could not clear the relay nudge key")
