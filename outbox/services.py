"""Writes of the messaging layer: replaying or discarding dead letters, and purging old messages."""

import logging
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from outbox.models import DeadLetter, OutboxMessage
from outbox.nudge import nudge_relay
from outbox.signing import NOT_AUTHENTIC

logger = logging.getLogger(__name__)


class ReplayRefused(ValueError):
    """The dead letter cannot be replayed (e.g. a poison message with no usable envelope)."""


class DiscardRefused(ValueError):
    """The dead letter does not wait for an operator (replayed or discarded already)."""


def dead_letter_discard(*, dead_letter_id: int, by: str, reason: str) -> DeadLetter:
    """Take a dead letter off the list of those waiting for an operator, saying who and why.

    Nothing is deleted: the row keeps its envelope and reason as the record of what failed.
    Only a dead letter still dead can be discarded; the decision is taken on its locked row,
    so a replay and a discard of the same letter never both happen.
    """
    with transaction.atomic():
        locked = DeadLetter.objects.select_for_update().get(pk=dead_letter_id)
        if locked.status != DeadLetter.Status.DEAD:
            raise DiscardRefused(f"this dead letter was {locked.status} already; only a dead one can be discarded")
        locked.status = DeadLetter.Status.DISCARDED
        locked.discarded_by = by
        locked.discarded_at = timezone.now()
        locked.discard_reason = reason
        locked.save(update_fields=["status", "discarded_by", "discarded_at", "discard_reason", "updated_at"])
    logger.info("dead letter discarded", extra={"dead_letter_id": dead_letter_id})
    return locked


def dead_letter_replay(*, dead_letter: DeadLetter) -> OutboxMessage:
    """Deliver a dead-lettered message again, with the same message id.

    Safe because consumers are idempotent: if the message had in fact been handled, its inbox
    row absorbs the replay. The outbox row is put back in the relay's queue (or re-created
    from the stored envelope when retention has purged it). A message that was not authentic
    is refused.
    """
    if dead_letter.reason == NOT_AUTHENTIC:
        # Replayed, it would go out signed by the relay: a forgery made genuine.
        raise ReplayRefused("this message is not authentic (this system did not write it); it is never replayed")
    envelope = dead_letter.envelope
    try:
        message_id = uuid.UUID(str(envelope.get("message_id")))
    except (TypeError, ValueError, AttributeError):
        raise ReplayRefused("this dead letter has no valid message id; it cannot be replayed") from None
    if dead_letter.poison and not isinstance(envelope.get("payload"), dict):
        raise ReplayRefused("a poison message whose payload is unreadable cannot be replayed")
    with transaction.atomic():
        locked = DeadLetter.objects.select_for_update().get(pk=dead_letter.pk)
        if locked.status == DeadLetter.Status.DISCARDED:
            raise ReplayRefused(
                f"this dead letter was discarded by {locked.discarded_by or 'an operator'}: {locked.discard_reason}"
            )
        message = _requeue(message_id, envelope)
        locked.status = DeadLetter.Status.REPLAYED
        locked.replayed_at = timezone.now()
        locked.replay_count += 1
        locked.save(update_fields=["status", "replayed_at", "replay_count", "updated_at"])
        transaction.on_commit(nudge_relay)
    dead_letter.refresh_from_db()
    logger.info("dead letter replayed", extra={"message_id": str(message_id)})
    return message


def _requeue(message_id: uuid.UUID, envelope: dict) -> OutboxMessage:
    existing = OutboxMessage.objects.select_for_update().filter(message_id=message_id).first()
    if existing is not None:
        existing.published_at = None
        existing.available_at = timezone.now()
        existing.save(update_fields=["published_at", "available_at"])
        return existing
    return OutboxMessage.objects.create(
        message_id=message_id,
        type=envelope["type"],
        destination=envelope["destination"],
        aggregate=envelope.get("aggregate", ""),
        aggregate_id=envelope.get("aggregate_id", ""),
        correlation_id=envelope.get("correlation_id", ""),
        causation_id=envelope.get("causation_id", ""),
        traceparent=envelope.get("traceparent", ""),
        payload=envelope["payload"],
        headers=envelope.get("headers") or {},
    )


def retention_purge(*, older_than: timedelta | None = None, batch_size: int = 5000) -> dict[str, int]:
    """Delete published outbox rows and inbox rows past retention, a small batch per transaction.

    Small batches keep each transaction short, so the relay (which only touches unpublished
    rows through a partial index) is never blocked behind a long delete.
    """
    cutoff = timezone.now() - (older_than or timedelta(days=settings.OUTBOX_RETENTION_DAYS))
    purged = {"outbox": 0, "inbox": 0}
    statements = {
        "outbox": (
            "DELETE FROM outbox_outboxmessage WHERE id IN (SELECT id FROM outbox_outboxmessage"
            " WHERE published_at IS NOT NULL AND published_at < %s LIMIT %s FOR UPDATE SKIP LOCKED)"
        ),
        "inbox": (
            "DELETE FROM outbox_inboxmessage WHERE id IN (SELECT id FROM outbox_inboxmessage"
            " WHERE received_at < %s LIMIT %s FOR UPDATE SKIP LOCKED)"
        ),
    }
    for table, sql in statements.items():
        while True:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(sql, [cutoff, batch_size])
                deleted = cursor.rowcount
            purged[table] += deleted
            if deleted < batch_size:
                break
    if any(purged.values()):
        logger.info("retention purge", extra=purged)
    return purged
