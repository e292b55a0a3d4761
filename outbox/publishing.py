"""publish(): write a message into the outbox, inside the caller's transaction."""

import uuid
from datetime import timedelta
from typing import Any

from django.db import transaction

from common.logging import current_origin
from common.rows import insert_statement, instance_values, mark_inserted
from common.tracing import current_traceparent
from outbox.dispatch import messages_of_this_transaction
from outbox.exceptions import OutsideTransaction
from outbox.messages import as_payload, current_message
from outbox.models import OutboxMessage
from outbox.nudge import nudge_relay


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
    elif not causation_id and (origin := current_origin()):
        # Caused by no message: say by whom (the request, the sweeper, an operator), so that the
        # root of a causality tree names its cause rather than listing the candidates.
        headers = {**(headers or {}), "origin": origin}
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
        messages_of_this_transaction().add(message, here=deliver_here)
    return message


# Every message of every saga step is written here: one statement prepared once, rather than
# the ORM compiling the same INSERT again for each message (an eighth of a saga's CPU). The
# time it becomes available is the database's, ``delay`` after the statement's.
_INSERT = insert_statement(
    OutboxMessage,
    expressions={"available_at": "statement_timestamp() + make_interval(secs => %s)"},
    returning=("id", "created_at", "available_at"),
)


def _insert(message: OutboxMessage, *, delay: timedelta | None) -> None:
    values = instance_values(message)
    values["available_at"] = delay.total_seconds() if delay else 0.0
    with transaction.get_connection().cursor() as cursor:
        cursor.execute(_INSERT.sql, _INSERT.params(values))
        mark_inserted(message, _INSERT.returning, cursor.fetchone())
