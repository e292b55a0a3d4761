"""publish(): write a message into the outbox, inside the caller's transaction."""

import logging
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from redis.exceptions import RedisError

from config.redis import get_redis
from outbox.exceptions import OutsideTransaction
from outbox.messages import as_payload, current_message
from outbox.models import OutboxMessage

logger = logging.getLogger(__name__)

NUDGE_KEY = "outbox:relay-nudge"


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
) -> OutboxMessage:
    """Write a message that is delivered if, and only if, the caller's transaction commits.

    Inside a message handler the new message inherits the handled message's correlation id
    and trace, and names it as its cause, unless the caller says otherwise.
    """
    if not transaction.get_connection().in_atomic_block:
        raise OutsideTransaction(
            "publish() must run inside transaction.atomic(), so that the message commits "
            "or rolls back together with the change that causes it"
        )
    cause = current_message()
    if cause is not None:
        correlation_id = correlation_id or cause.correlation_id
        causation_id = causation_id or cause.message_id
        traceparent = traceparent or cause.traceparent
    fields: dict[str, Any] = {}
    if delay:
        fields["available_at"] = timezone.now() + delay
    message = OutboxMessage.objects.create(
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
        **fields,
    )
    if delay:
        seconds = delay.total_seconds()
        transaction.on_commit(lambda: nudge_relay(countdown=seconds))
    else:
        transaction.on_commit(nudge_relay)
    return message


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
    except (RedisError, OSError) as exc:  # kombu raises OperationalError (an OSError) when the broker is down
        logger.warning("outbox relay nudge failed; beat will drain the outbox", extra={"error": str(exc)})
