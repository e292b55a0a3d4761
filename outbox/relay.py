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

from config.celery import app as celery_app
from config.faults import fault_rate
from config.redis import get_redis
from outbox.publishing import NUDGE_KEY

logger = logging.getLogger(__name__)

CONSUME_TASK = "outbox.consume"
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
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [RELAY_LOCK_KEY])
            cursor.execute(_CLAIM_SQL, [batch_size])
            rows = cursor.fetchall()
            if not rows:
                return 0
            duplicate_rate, reorder_rate = fault_rate("duplicate_delivery"), fault_rate("reorder_delivery")
            if reorder_rate and random.random() < reorder_rate:
                rows = random.sample(rows, len(rows))  # injected fault: delivery out of order
            # One Redis pipeline per batch (kombu's publish batch) instead of a round trip per message.
            with celery_app.producer_or_acquire() as producer, producer.batch(max_size=len(rows) * 2):
                for row in rows:
                    envelope = dict(zip(_COLUMNS, row[1:], strict=True))
                    envelope["message_id"] = str(envelope["message_id"])
                    envelope["created_at"] = envelope["created_at"].isoformat()
                    # A raw cursor hands jsonb back as text.
                    for name in ("payload", "headers"):
                        if isinstance(envelope[name], str):
                            envelope[name] = json.loads(envelope[name])
                    copies = 2 if duplicate_rate and random.random() < duplicate_rate else 1
                    for _ in range(copies):  # a second copy is an injected fault: duplicate delivery
                        celery_app.send_task(
                            CONSUME_TASK,
                            args=[envelope],
                            task_id=envelope["message_id"],
                            queue=envelope["destination"],
                            producer=producer,
                            # The envelope is logged by the consumer; a repr per message is waste.
                            argsrepr="",
                            kwargsrepr="",
                        )
            if after_send is not None:
                after_send()
            ids = [row[0] for row in rows]
            cursor.execute(
                "UPDATE outbox_outboxmessage SET published_at = now(), attempts = attempts + 1 WHERE id = ANY(%s)",
                [ids],
            )
    return len(rows)


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
