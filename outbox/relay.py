"""The relay: moves committed outbox messages to the Celery queue of their destination.

Delivery is at least once: a crash between sending and marking sends the batch again, and
the consumers' inbox absorbs the duplicates.
"""

import logging
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import connection, transaction

from common.rows import dicts_of_cursor, select_columns
from outbox import broker
from outbox.models import ENVELOPE_FIELDS, OutboxMessage, envelope_of
from outbox.nudge import nudge_clear
from outbox.stream import STREAM_DESTINATION, StreamUnavailable, event_stream

logger = logging.getLogger(__name__)

# Relays take turns per batch: with SKIP LOCKED alone, two relays could send a later
# message of an aggregate before an earlier one that the other relay had claimed.
RELAY_LOCK_KEY = 0x0B0C5E1A
# Integration events' turns (relay_stream_batch): the stream's order per aggregate is theirs alone.
STREAM_RELAY_LOCK_KEY = 0x0B0C5E1B

_SENT = ("id", *ENVELOPE_FIELDS)

# The relay's batch, claimed and marked raw: through the ORM (``.values()``, and ``id__in`` with
# one placeholder per id) a batch of 500 cost 16-28 ms of CPU to claim instead of 13-21, and 6.2 ms
# to mark instead of 1.6 (about 8% of the relay's CPU per message). bench_outbox on a shared
# machine could not tell them apart: relay_msgs_per_s=4191 with the ORM's (pg_commits_per_s=1715),
# 4093 with these (1285), 4629 before they were generated (1329).
_CLAIM_SQL = f"""
    SELECT {select_columns(OutboxMessage, names=_SENT)}
      FROM outbox_outboxmessage
     WHERE published_at IS NULL AND available_at <= now() AND destination <> '{STREAM_DESTINATION}'
     ORDER BY id
     LIMIT %s
       FOR UPDATE SKIP LOCKED
"""
# Integration events are claimed apart: a stream that is down holds back events, never commands.
_CLAIM_STREAM_SQL = f"""
    SELECT {select_columns(OutboxMessage, names=_SENT)}
      FROM outbox_outboxmessage
     WHERE published_at IS NULL AND destination = '{STREAM_DESTINATION}'
     ORDER BY id
     LIMIT %s
       FOR UPDATE SKIP LOCKED
"""
_MARK_SQL = "UPDATE outbox_outboxmessage SET published_at = now(), attempts = attempts + 1 WHERE id = ANY(%s)"

# Run after every commit that published (and for every message delivered in process): kept raw
# because the ORM cannot claim and mark in one statement (an UPDATE ... FROM a locking CTE), and
# the claim-then-update through the ORM is a round trip and two compilations more per commit.
_CLAIM_COMMITTED_SQL = f"""
    WITH claimed AS (
        SELECT m.id
          FROM outbox_outboxmessage m, (SELECT pg_advisory_xact_lock_shared(%s)) AS shared_relay_lock
         WHERE m.id = ANY(%s) AND m.published_at IS NULL AND m.available_at <= now()
           AND NOT EXISTS (
               SELECT 1 FROM outbox_outboxmessage older
                WHERE older.published_at IS NULL AND older.aggregate = m.aggregate
                  AND older.aggregate_id = m.aggregate_id AND older.id < m.id
                  AND older.destination <> '{STREAM_DESTINATION}')
         ORDER BY m.id
           FOR UPDATE OF m SKIP LOCKED
    )
    UPDATE outbox_outboxmessage o SET published_at = now(), attempts = o.attempts + 1
      FROM claimed WHERE o.id = claimed.id
    RETURNING {select_columns(OutboxMessage, names=_SENT, alias="o")}
"""


def relay_batch(*, batch_size: int | None = None, after_send: Callable[[], None] | None = None) -> int:
    """Claim, send and mark one batch; returns how many messages it sent.

    ``after_send`` runs between sending and marking; tests use it to crash the relay there.
    """
    batch_size = batch_size or settings.OUTBOX_RELAY_BATCH_SIZE
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [RELAY_LOCK_KEY])
        cursor.execute(_CLAIM_SQL, [batch_size])
        rows = dicts_of_cursor(OutboxMessage, cursor)
        if not rows:
            return 0
        broker.send([envelope_of(row) for row in rows])
        if after_send is not None:
            after_send()
        cursor.execute(_MARK_SQL, [[row["id"] for row in rows]])
    return len(rows)


# After the stream failed, this process leaves events alone for a while (doubling up to a
# bound): each attempt costs a connection timeout, and commands must not wait behind it.
_stream_backoff = {"until": 0.0, "seconds": 0.0}


def relay_stream_batch(*, batch_size: int | None = None, after_send: Callable[[], None] | None = None) -> int:
    """Claim, publish (with confirms) and mark one batch of integration events; returns how
    many it published. A stream that is not configured or not reachable publishes nothing: the
    events wait in the outbox, in order, for the next relay."""
    stream = event_stream()
    if stream is None or time.monotonic() < _stream_backoff["until"]:
        return 0
    batch_size = batch_size or settings.OUTBOX_RELAY_BATCH_SIZE
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            # Relays take turns at the stream under a lock of its own: the commands' lock would
            # hold every saga's next command (claim_committed takes it shared) for the broker's
            # confirms of a batch of events.
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [STREAM_RELAY_LOCK_KEY])
            cursor.execute(_CLAIM_STREAM_SQL, [batch_size])
            rows = dicts_of_cursor(OutboxMessage, cursor)
            if not rows:
                return 0
            stream.publish([envelope_of(row) for row in rows])
            if after_send is not None:
                after_send()
            cursor.execute(_MARK_SQL, [[row["id"] for row in rows]])
    except StreamUnavailable as exc:
        seconds = min(max(_stream_backoff["seconds"] * 2, 0.5), settings.EVENT_STREAM_RETRY_MAX_SECONDS)
        _stream_backoff.update(until=time.monotonic() + seconds, seconds=seconds)
        logger.warning("event stream unavailable; events wait in the outbox", extra={"error": str(exc)})
        return 0
    _stream_backoff.update(until=0.0, seconds=0.0)
    return len(rows)


def claim_committed(ids: list[int]) -> list[dict[str, Any]]:
    """Claim and mark published, in the caller's transaction, those of ``ids`` that may be sent
    now; returns their rows (``id`` and the envelope's fields by name), in id order.

    It holds the relay lock in shared mode, so it never runs beside a relay batch, and it
    skips any message of an aggregate that still has an older unpublished message (another
    dispatcher's in flight, a delayed one, one whose send failed): those are the relay's, which
    publishes them in order. The mark commits with the caller's transaction, so a send or a
    handler that fails leaves the messages unpublished.
    """
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM_COMMITTED_SQL, [RELAY_LOCK_KEY, ids])
        rows = dicts_of_cursor(OutboxMessage, cursor)
    return sorted(rows, key=lambda row: row["id"])


def send_committed(ids: list[int]) -> int:
    """Send messages right after the transaction that wrote them committed, without waiting
    for the relay: one broker hop less per message. Returns how many it sent."""
    if not ids:
        return 0
    with transaction.atomic():
        rows = claim_committed(ids)
        if rows:
            broker.send([envelope_of(row) for row in rows])
    return len(rows)


def relay_drain(*, max_seconds: float = 30.0, batch_size: int | None = None) -> int:
    """Send batches until the outbox is empty (or time is up); returns how many were sent."""
    nudge_clear()
    deadline = time.monotonic() + max_seconds
    sent = 0
    while time.monotonic() < deadline:
        count = relay_batch(batch_size=batch_size) + relay_stream_batch(batch_size=batch_size)
        sent += count
        if count == 0:
            break
    if sent:
        logger.info("outbox relayed", extra={"sent": sent})
    return sent
