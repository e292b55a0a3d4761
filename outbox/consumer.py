"""Consuming messages effectively once: the handler registry and the inbox wrapper.

A handler runs in one transaction with the insertion of its inbox row, so its effect and
the record that it happened commit together. A crash before the commit leaves the message
unhandled, and its redelivery does the work; a duplicate finds the inbox row and stops.

Before anything else a delivered envelope must prove that this system wrote it (its signature,
see outbox.signing); one that cannot is a dead letter and nothing more.
"""

import json
import logging
import random
import traceback as tb
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models.functions import Now
from opentelemetry.trace import Span, SpanKind

from common import metrics, tracing
from common.logging import bind_context, reset_context
from common.redis import get_redis
from common.rows import insert_statement
from outbox.exceptions import PoisonMessage
from outbox.messages import Message, reset_current_message, set_current_message
from outbox.models import DeadLetter, InboxMessage
from outbox.signing import NOT_AUTHENTIC, is_authentic

# The failure a forged or altered envelope is grouped under among the dead letters.
NOT_AUTHENTIC_CLASS = "NotAuthentic"

logger = logging.getLogger(__name__)

Handler = Callable[[Message, Any], None]
Prepare = Callable[[Message], Any]
DeadLetterHook = Callable[[Message, str], None]


@dataclass(frozen=True)
class Registration:
    consumer: str
    type: str
    handle: Handler
    prepare: Prepare | None = None
    on_dead_letter: DeadLetterHook | None = None
    span_attributes: Callable[[Message], dict[str, Any]] | None = None


_registry: dict[tuple[str, str], Registration] = {}


def register(
    consumer: str,
    type: str,
    *,
    handle: Handler,
    prepare: Prepare | None = None,
    on_dead_letter: DeadLetterHook | None = None,
    span_attributes: Callable[[Message], dict[str, Any]] | None = None,
) -> None:
    """Register the handler of one message type for one consumer (a destination queue).

    ``prepare`` runs first, outside any transaction, for calls to the outside world (a payment
    gateway, a carrier) that must be idempotent by key; its result is handed to ``handle``.
    ``on_dead_letter`` runs in the dead letter's transaction, e.g. to tell a saga the step failed.
    ``span_attributes`` names what a message is about on its handler's span.
    """
    _registry[(consumer, type)] = Registration(consumer, type, handle, prepare, on_dead_letter, span_attributes)


def registration_for(consumer: str, type: str) -> Registration:
    try:
        return _registry[(consumer, type)]
    except KeyError:
        raise PoisonMessage(f"no handler for message type {type!r} in {consumer!r}") from None


def registered(consumer: str, type: str) -> Registration | None:
    return _registry.get((consumer, type))


class RetryLater(Exception):
    """Raised by :func:`deliver` when the message must be delivered again after ``countdown``."""

    def __init__(self, countdown: float, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.countdown = countdown
        self.cause = cause


def backoff_seconds(attempt: int) -> float:
    """Exponential backoff with full jitter, so retries of many messages do not stampede."""
    ceiling = min(settings.OUTBOX_RETRY_MAX_SECONDS, settings.OUTBOX_RETRY_BASE_SECONDS * 2**attempt)
    return random.uniform(ceiling / 2, ceiling)


def deliver(raw: object, *, attempt: int = 0, queue: str = "", local: bool = False) -> str:
    """Handle one delivered envelope. Returns handled, duplicate or dead_letter.

    Raises :class:`RetryLater` on a transient failure while attempts remain. ``local``: the
    caller's transaction is the handler's (local delivery, see ``dispatch._deliver_here``):
    no savepoint of its own, and any failure of the handler is raised as it is, for the caller to
    roll back and hand the message to the broker, whose delivery retries or dead-letters it.

    Every envelope is verified first, except a local one: ``local`` is only ever passed by
    ``dispatch._deliver_here``, which read it from our own outbox table in this very
    transaction (nothing crossed a process boundary); whatever comes through the Celery task,
    from the relay or from anyone else who can write to the broker, is verified.
    """
    if not local and not is_authentic(raw):
        _dead_letter_not_authentic(raw, queue=queue)
        metrics.message_delivered(consumer=queue or "unknown", type="(not authentic)", outcome="dead_letter")
        return "dead_letter"
    try:
        message = Message.from_envelope(raw)
        registration = registration_for(message.destination, message.type)
    except PoisonMessage as exc:
        _dead_letter_poison(raw, queue=queue, reason=str(exc))
        metrics.message_delivered(consumer=queue or "unknown", type="(poison)", outcome="dead_letter")
        return "dead_letter"

    log_token = bind_context(
        message_id=message.message_id,
        message_type=message.type,
        correlation_id=message.correlation_id,
        causation_id=message.causation_id,
        consumer=registration.consumer,
        attempt=attempt,
    )
    message_token = set_current_message(message)
    outcome = "retry"  # unless _deliver returns: RetryLater, or the worker is going away
    try:
        with _consumer_span(message, registration, attempt) as span:
            outcome = _deliver(message, registration, attempt, local=local)
            span.set_attribute("backoffice.outcome", outcome)
        return outcome
    finally:
        metrics.message_delivered(consumer=registration.consumer, type=message.type, outcome=outcome)
        reset_current_message(message_token)
        reset_context(log_token)


def _consumer_span(message: Message, registration: Registration, attempt: int) -> AbstractContextManager[Span]:
    """The handler's span, a child of the span that published the message (its traceparent),
    whichever process or path delivered it: the trace follows the message, not the task."""
    return tracing.span(
        f"handle {message.type}",
        kind=SpanKind.CONSUMER,
        traceparent=message.traceparent,
        attributes={
            "messaging.system": "outbox",
            "messaging.operation.type": "process",
            "messaging.destination.name": registration.consumer,
            "messaging.message.id": message.message_id,
            "messaging.message.conversation_id": message.correlation_id,
            "backoffice.causation_id": message.causation_id,
            "backoffice.delivery_attempt": attempt,
            # What the message is about, in the words of whoever registered its handler (a
            # saga command's ids, a reply's).
            **(registration.span_attributes(message) if registration.span_attributes else {}),
        },
    )


DUPLICATES_KEY = "stats:duplicates-absorbed"


def _count_duplicate() -> None:
    try:
        get_redis().incr(DUPLICATES_KEY)
    except Exception:  # noqa: BLE001 - a statistic, never a reason to fail a delivery
        logger.debug("could not count a duplicate")


def _deliver(message: Message, registration: Registration, attempt: int, *, local: bool = False) -> str:
    if registration.prepare is not None and _handled_already(registration.consumer, message):
        # Checked before calling the outside world; handlers without such a call rely on the
        # inbox insert below alone, one round trip fewer.
        logger.info("duplicate message absorbed")
        _count_duplicate()
        return "duplicate"
    try:
        prepared = registration.prepare(message) if registration.prepare else None
        with transaction.atomic(savepoint=not local):
            if not _claim_inbox(registration.consumer, message):
                # A concurrent delivery of the same message committed first; our prepare step
                # was idempotent by key, so nothing happened twice.
                logger.info("duplicate message absorbed (concurrent delivery)")
                transaction.on_commit(_count_duplicate)
                return "duplicate"
            registration.handle(message, prepared)
    except Exception as exc:
        if local:
            raise
        if isinstance(exc, PoisonMessage):
            _dead_letter(
                message,
                registration,
                reason=str(exc),
                error_class=type(exc).__name__,
                poison=True,
                attempts=attempt + 1,
            )
            return "dead_letter"
        if attempt + 1 >= settings.OUTBOX_MAX_ATTEMPTS:
            _dead_letter(
                message,
                registration,
                reason=f"{type(exc).__name__}: {exc}",
                error_class=type(exc).__name__,
                traceback=tb.format_exc(),
                attempts=attempt + 1,
            )
            return "dead_letter"
        countdown = backoff_seconds(attempt)
        logger.warning(
            "handler failed; retrying", extra={"error": f"{type(exc).__name__}: {exc}", "retry_in_s": countdown}
        )
        raise RetryLater(countdown, exc) from exc
    logger.debug("message handled")
    return "handled"


def _handled_already(consumer: str, message: Message) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM outbox_inboxmessage WHERE consumer = %s AND message_id = %s)",
            [consumer, message.message_id],
        )
        return cursor.fetchone()[0]


# Every delivery runs it: a statement prepared once, not an ORM insert compiled anew.
_CLAIM_INBOX = insert_statement(
    InboxMessage, on_conflict="ON CONFLICT (consumer, message_id) DO NOTHING", returning=("id",)
)


def _claim_inbox(consumer: str, message: Message) -> bool:
    """Insert the inbox row; False when it is already there (the message was handled)."""
    values = {
        "consumer": consumer,
        "message_id": message.message_id,
        "type": message.type,
        "correlation_id": message.correlation_id,
    }
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM_INBOX.sql, _CLAIM_INBOX.params(values))
        return cursor.fetchone() is not None


def _dead_letter(
    message: Message,
    registration: Registration,
    *,
    reason: str,
    error_class: str,
    traceback: str = "",
    poison: bool = False,
    attempts: int = 0,
) -> None:
    logger.error("message dead-lettered", extra={"reason": reason, "poison": poison})
    with transaction.atomic():
        _store_dead_letter(
            consumer=registration.consumer,
            message_id=message.message_id,
            type=message.type,
            correlation_id=message.correlation_id,
            envelope=_envelope_of(message),
            reason=reason,
            error_class=error_class[:100],
            traceback=traceback,
            poison=poison,
            attempts=attempts,
        )
        if registration.on_dead_letter is not None:
            registration.on_dead_letter(message, reason)


def _dead_letter_not_authentic(raw: object, *, queue: str) -> None:
    """Keep a forged or altered message as evidence, poison (never replayed as it is: see
    ``services.dead_letter_replay``), and raise the alarm: someone other than this system
    wrote to the broker, or the keys differ between processes."""
    envelope = _storable(raw)
    claimed_id = str(envelope.get("message_id") or "")[:64]
    consumer = str(queue or envelope.get("destination") or "unknown")[:50]
    logger.error(
        "ALERT: a message that is not authentic was dead-lettered, with no effect",
        extra={
            "alert": "message_not_authentic",
            "queue": queue,
            "claimed_type": str(envelope.get("type") or "")[:100],
            "claimed_message_id": claimed_id,
        },
    )
    fields = {
        "consumer": consumer,
        "type": str(envelope.get("type") or "")[:100],
        "correlation_id": str(envelope.get("correlation_id") or "")[:64],
        "envelope": envelope,
        "reason": NOT_AUTHENTIC,
        "error_class": NOT_AUTHENTIC_CLASS,
        "poison": True,
        "attempts": 1,
    }
    # Never over a dead letter of ours under the same id: a forgery must not replace the
    # evidence, or the replayable envelope, of a genuine message.
    taken = not claimed_id or DeadLetter.objects.filter(consumer=consumer, message_id=claimed_id).exists()
    try:
        with transaction.atomic():
            DeadLetter.objects.create(message_id=_forged_id() if taken else claimed_id, **fields)
    except IntegrityError:  # the same id, dead-lettered concurrently
        DeadLetter.objects.create(message_id=_forged_id(), **fields)


def _forged_id() -> str:
    return f"forged-{random.getrandbits(64):x}"


def _storable(raw: object) -> dict[str, Any]:
    """``raw`` as a JSON object to keep in a dead letter (kombu may decode tagged values into
    objects JSON cannot hold)."""
    if isinstance(raw, dict):
        try:
            return json.loads(json.dumps(raw, default=repr))
        except (TypeError, ValueError):
            pass
    return {"raw": repr(raw)[:10_000]}


def _dead_letter_poison(raw: object, *, queue: str, reason: str) -> None:
    envelope = _storable(raw)
    logger.error("poison message dead-lettered", extra={"reason": reason, "queue": queue})
    with transaction.atomic():
        _store_dead_letter(
            consumer=str(envelope.get("destination") or queue or "unknown")[:50],
            message_id=str(envelope.get("message_id") or "")[:64] or f"poison-{random.getrandbits(64):x}",
            type=str(envelope.get("type") or "")[:100],
            correlation_id=str(envelope.get("correlation_id") or "")[:64],
            envelope=envelope,
            reason=reason,
            error_class=PoisonMessage.__name__,
            poison=True,
            attempts=1,
        )


def _store_dead_letter(*, consumer: str, message_id: str, **fields: Any) -> None:
    DeadLetter.objects.update_or_create(
        consumer=consumer,
        message_id=message_id,
        # Dead again after a replay: what was decided about its last death no longer holds.
        defaults={**fields, **DeadLetter.UNRESOLVED, "updated_at": Now()},
    )


def _envelope_of(message: Message) -> dict[str, Any]:
    return asdict(message)
