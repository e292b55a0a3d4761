"""The relay: moves committed outbox messages to the Celery queue of their destination.

Delivery is at least once: a crash between sending and marking sends the batch again, and
the consumers' inbox absorbs the duplicates.
"""

import json
import logging
import random
import time
from collections.abc import Callable

from django.conf import settings
from django.db import connection, transaction

from common.faults import fault_rate
from common.redis import get_redis
from outbox.broker import send_consume_tasks
from outbox.publishing import NUDGE_KEY

logger = logging.getLogger(__name__)

# Relays take turns per batch: with SKIP LOCKED alone, two relays could send a later
# message of an aggregate before an earlier one that the other relay had claimed.
RELAY_LOCK_KEY = 0x0B0C5E1A

_CLAIM_SQL = """
    SELECT id, message_id, type, destination, aggregate, aggregate_id, correlation_id,
           causation_id, traceparent, created_at, payload, headers
      FROM outbox_outboxmessage
     WHERE published_at IS NULL AND available_at <= now()
     ORDER BY id
     LIMIT %s
       FOR UPDATE SKIP LOCKED
"""
_DISPATCH_SQL = """
    SELECT m.id, m.message_id, m.type, m.destination, m.aggregate, m.aggregate_id, m.correlation_id,
           m.causation_id, m.traceparent, m.created_at, m.payload, m.headers
      FROM outbox_outboxmessage m, (SELECT pg_advisory_xact_lock_shared(%s)) AS shared_relay_lock
     WHERE m.id = ANY(%s) AND m.published_at IS NULL AND m.available_at <= now()
       AND NOT EXISTS (
           SELECT 1 FROM outbox_outboxmessage older
            WHERE older.published_at IS NULL AND older.aggregate = m.aggregate
              AND older.aggregate_id = m.aggregate_id AND older.id < m.id)
     ORDER BY m.id
       FOR UPDATE OF m SKIP LOCKED
"""
_DISPATCH_AND_MARK_SQL = f"""
    WITH claimed AS ({_DISPATCH_SQL})
    UPDATE outbox_outboxmessage o SET published_at = now(), attempts = o.attempts + 1
      FROM claimed WHERE o.id = claimed.id
    RETURNING o.id, o.message_id, o.type, o.destination, o.aggregate, o.aggregate_id, o.correlation_id,
              o.causation_id, o.traceparent, o.created_at, o.payload, o.headers
"""
_COLUMNS = (
    "message_id",
    "type",
    "destination",
    "aggregate",
    "aggregate_id",
    "correlation_id",
    "causation_id",
    "traceparent",
    "created_at",
    "payload",
    "headers",
)


def relay_batch(*, batch_size: int | None = None, after_send: Callable[[], None] | None = None) -> int:
    """Claim, send and mark one batch; returns how many messages it sent.

    ``after_send`` runs between sending and marking; tests use it to crash the relay there.
    """
    batch_size = batch_size or settings.OUTBOX_RELAY_BATCH_SIZE
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [RELAY_LOCK_KEY])
        cursor.execute(_CLAIM_SQL, [batch_size])
        rows = cursor.fetchall()
        if not rows:
            return 0
        _send(rows)
        if after_send is not None:
            after_send()
        _mark_published(cursor, [row[0] for row in rows])
    return len(rows)


def dispatch_committed(ids: list[int]) -> int:
    """Send messages right after the transaction that wrote them committed, without waiting
    for the relay: one broker hop less per message. Returns how many it sent.

    It holds the relay lock in shared mode, so it never runs beside a relay batch, and it
    skips any message of an aggregate that still has an older unpublished message (another
    dispatcher's in flight, a delayed one, one whose send failed): those are the relay's, which
    publishes them in order.
    """
    if not ids:
        return 0
    with transaction.atomic(), connection.cursor() as cursor:
        # Claimed and marked in one statement; the mark commits only after the send below
        # succeeded, so a failed send leaves the messages to the relay.
        cursor.execute(_DISPATCH_AND_MARK_SQL, [RELAY_LOCK_KEY, ids])
        rows = sorted(cursor.fetchall())
        if rows:
            _send(rows)
    return len(rows)


def deliver_committed_locally(ids: list[int]) -> set[int]:
    """Hand messages for a consumer that lives in this process straight to its handler, in one
    transaction with marking them published: a broker round trip and a task less per message.

    Only for handlers without an outside call (``prepare``), which must never run inside a
    transaction. The handlers run through the same inbox wrapper as a delivered message, in
    this one transaction and without savepoints (two round trips fewer per message): any
    failure rolls all of it back, and the caller then sends the messages through the broker,
    whose delivery retries or dead-letters them. A crash rolls everything back and the relay
    sends the messages. Returns the ids delivered here.
    """
    from outbox.consumer import deliver

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_DISPATCH_AND_MARK_SQL, [RELAY_LOCK_KEY, ids])
        rows = sorted(cursor.fetchall())
        for row in rows:
            deliver(_envelope(row), local=True)  # handled or a duplicate
    logger.debug("delivered locally", extra={"delivered": len(rows), "asked": len(ids)})
    return {row[0] for row in rows}


def _envelope(row: tuple) -> dict:
    envelope = dict(zip(_COLUMNS, row[1:], strict=True))
    envelope["message_id"] = str(envelope["message_id"])
    envelope["created_at"] = envelope["created_at"].isoformat()
    # A raw cursor hands jsonb back as text.
    for name in ("payload", "headers"):
        if isinstance(envelope[name], str):
            envelope[name] = json.loads(envelope[name])
    return envelope


def _send(rows: list[tuple]) -> None:
    duplicate_rate, reorder_rate = fault_rate("duplicate_delivery"), fault_rate("reorder_delivery")
    if reorder_rate and random.random() < reorder_rate:
        rows = random.sample(rows, len(rows))  # injected fault: delivery out of order
    envelopes = []
    for row in rows:
        envelope = _envelope(row)
        envelopes.append(envelope)
        if duplicate_rate and random.random() < duplicate_rate:
            envelopes.append(envelope)  # injected fault: duplicate delivery
    send_consume_tasks(envelopes)


def _mark_published(cursor, ids: list[int]) -> None:
    cursor.execute(
        "UPDATE outbox_outboxmessage SET published_at = now(), attempts = attempts + 1 WHERE id = ANY(%s)", [ids]
    )


def relay_drain(*, max_seconds: float = 30.0, batch_size: int | None = None) -> int:
    """Send batches until the outbox is empty (or time is up); returns how many were sent."""
    try:
        get_redis().delete(NUDGE_KEY)
    except Exception:  # noqa: BLE001 - the nudge key is an optimisation, never a reason to stop
        logger.warning("could not clear the relay nudge key")
    deadline = time.monotonic() + max_seconds
    sent = 0
    while time.monotonic() < deadline:
        count = relay_batch(batch_size=batch_size)
        sent += count
        if count == 0:
            break
    if sent:
        logger.info("outbox relayed", extra={"sent": sent})
    return sent
