"""publish(): write a message into the outbox, inside the caller's transaction."""

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from kombu.exceptions import KombuError
from psycopg.types.json import Jsonb
from redis.exceptions import RedisError

from common.redis import get_redis
from common.rows import mark_inserted
from common.tracing import current_traceparent
from outbox.exceptions import OutsideTransaction
from outbox.messages import as_payload, current_message
from outbox.models import OutboxMessage

logger = logging.getLogger(__name__)

NUDGE_KEY = "outbox:relay-nudge"

# Set while a web request runs (outbox.middleware): its commits nudge the relay rather than
# send their messages themselves. See _CommitDispatch.
_relay_sends = ContextVar("outbox_relay_sends", default=False)


@contextmanager
def relay_sends() -> Iterator[None]:
    """Leave the messages committed inside to the relay, nudged by each commit."""
    token = _relay_sends.set(True)
    try:
        yield
    finally:
        _relay_sends.reset(token)


def publish(
    *,
    type: str,
    destination: str,
    payload: Any,
    aggregate: str,
    aggregate_id: object,
    correlation_id: str | None = None,
    causation_id: str | None = None,
    traceparent: str | None = None,
    headers: dict[str, Any] | None = None,
    delay: timedelta | None = None,
    message_id: uuid.UUID | None = None,
    deliver_here: bool = False,
) -> OutboxMessage:
    """Write a message that is delivered if, and only if, the caller's transaction commits.

    Inside a message handler the new message inherits the handled message's correlation id
    and names it as its cause, unless the caller says otherwise. Its traceparent is the
    current span's (the API request's, the handler's), so that its consumer's span becomes a
    child of the span that published it; without a current span, the handled message's.

    ``deliver_here``: handle the message in this process right after the commit (web requests
    included), not behind whatever waits in the broker's queue; the broker takes it if that
    fails. Only for a message whose handler makes no outside call.
    """
    if not transaction.get_connection().in_atomic_block:
        raise OutsideTransaction(
            "publish() must run inside transaction.atomic(), so that the message commits "
            "or rolls back together with the change that causes it"
        )
    cause = current_message()
    traceparent = traceparent or current_traceparent()
    if cause is not None:
        correlation_id = correlation_id or cause.correlation_id
        causation_id = causation_id or cause.message_id
        traceparent = traceparent or cause.traceparent
    message = OutboxMessage(
        message_id=message_id or uuid.uuid4(),
        type=type,
        destination=destination,
        aggregate=aggregate,
        aggregate_id=str(aggregate_id),
        correlation_id=str(correlation_id or ""),
        causation_id=str(causation_id or ""),
        traceparent=traceparent or "",
        payload=as_payload(payload),
        headers=headers or {},
    )
    _insert(message, delay=delay)
    if delay:
        seconds = delay.total_seconds()
        transaction.on_commit(lambda: nudge_relay(countdown=seconds))
    else:
        _dispatch_after_commit().add(message, here=deliver_here)
    return message


class _CommitDispatch:
    """The messages one transaction published, sent as soon as it commits (see
    ``relay.dispatch_committed``); whatever it could not send is left to the relay.

    Inside relay_sends() (a web request), the commit only nudges the relay: sending costs three
    round trips to PostgreSQL and one to Redis per transaction, spent on the client's time and
    on the web's CPU, while the relay sends a whole batch for the price of one. The first command
    of an order's saga leaves a few milliseconds later, not the answer to the client.
    """

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.local_ids: list[int] = []
        self.here_ids: list[int] = []

    def add(self, message: OutboxMessage, *, here: bool = False) -> None:
        if here:
            self.here_ids.append(message.pk)
        else:
            (self.local_ids if _deliverable_locally(message) else self.ids).append(message.pk)

    def __call__(self) -> None:
        if _relay_sends.get():
            self._deliver_locally(self.here_ids)  # what it could not deliver is the relay's
            nudge_relay()
            return
        remote = list(self.ids) + self._deliver_locally(self.here_ids + self.local_ids)
        from outbox.relay import dispatch_committed

        try:
            sent = dispatch_committed(remote)
        except Exception as exc:  # noqa: BLE001 - the relay is the safety net for any failure here
            logger.warning("direct dispatch failed; the relay will send", extra={"error": str(exc)})
            sent = 0
        if sent < len(remote):
            nudge_relay()

    @staticmethod
    def _deliver_locally(ids: list[int]) -> list[int]:
        """Hand ``ids`` to their handlers in this process; returns those left for the broker."""
        from outbox.relay import deliver_committed_locally

        if not ids:
            return []
        try:
            delivered = deliver_committed_locally(ids)
        except Exception as exc:  # noqa: BLE001 - the broker path takes over
            logger.warning(
                "local delivery failed; sending through the broker", extra={"error": f"{type(exc).__name__}: {exc}"}
            )
            delivered = set()
        return [pk for pk in ids if pk not in delivered]


# Every message of every saga step is written here: one statement prepared once, rather than
# the ORM compiling the same INSERT again for each message (an eighth of a saga's CPU).
_INSERT_SQL = """
    INSERT INTO outbox_outboxmessage (message_id, type, destination, aggregate, aggregate_id, correlation_id,
                                      causation_id, traceparent, payload, headers, available_at, attempts, last_error)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, statement_timestamp() + make_interval(secs => %s), 0, '')
    RETURNING id, created_at, available_at
"""


def _insert(message: OutboxMessage, *, delay: timedelta | None) -> None:
    with transaction.get_connection().cursor() as cursor:
        cursor.execute(
            _INSERT_SQL,
            [
                message.message_id,
                message.type,
                message.destination,
                message.aggregate,
                message.aggregate_id,
                message.correlation_id,
                message.causation_id,
                message.traceparent,
                Jsonb(message.payload),
                Jsonb(message.headers),
                delay.total_seconds() if delay else 0.0,
            ],
        )
        mark_inserted(message, ("id", "created_at", "available_at"), cursor.fetchone())


def _deliverable_locally(message: OutboxMessage) -> bool:
    """A consumer configured to run in every process (settings.OUTBOX_LOCAL_CONSUMERS) whose
    handler makes no outside call. Off while delivery faults are injected, so that they reach
    every message."""
    from outbox.consumer import registered

    if message.destination not in settings.OUTBOX_LOCAL_CONSUMERS:
        return False
    registration = registered(message.destination, message.type)
    if registration is None or registration.prepare is not None:
        return False
    from common.faults import fault_rate

    return not (fault_rate("duplicate_delivery") or fault_rate("reorder_delivery"))


def _dispatch_after_commit() -> _CommitDispatch:
    """The current transaction's dispatcher, registered once with on_commit. Django drops it
    with the callbacks of a rolled-back transaction, and with it the ids of rolled-back rows."""
    connection = transaction.get_connection()
    for _, callback, _ in connection.run_on_commit:
        if isinstance(callback, _CommitDispatch):
            return callback
    dispatcher = _CommitDispatch()
    transaction.on_commit(dispatcher)
    return dispatcher


def nudge_relay(*, countdown: float | None = None) -> None:
    """Wake the relay right after a commit, at most once per burst of commits.

    The relay deletes the key when it starts and drains until nothing is left, so a commit
    that lands after that sets the key again and gets its own nudge: no wake-up is lost. A lost
    nudge (Redis down, task dropped) costs only latency: beat runs the relay every second.
    """
    from outbox.tasks import relay

    try:
        if countdown:
            # A delayed message (a retry with backoff) wakes the relay when it becomes due.
            relay.apply_async(countdown=countdown + 0.05)
        elif get_redis().set(NUDGE_KEY, "1", nx=True, px=settings.OUTBOX_NUDGE_DEBOUNCE_MS):
            relay.apply_async()
    except (RedisError, OSError, KombuError) as exc:  # a broker that is down: kombu's OperationalError
        # Never raised to the caller: it runs after a commit, whose work is done and must be
        # answered as done; the relay's beat schedule sends what this nudge would have hurried.
        logger.warning("outbox relay nudge failed; beat will drain the outbox", extra={"error": str(exc)})
