"""Registering a context's handler for a saga command, replying to the orchestrator.

The handler's effect, its inbox row, the final outcome under its step key (sagas.outcomes)
and the reply commit in one transaction. A business failure commits the reply, the inbox row
and the refusal alone, so the orchestrator compensates at once:
a handler decides before it writes, and raises a business failure only before its first write.
A context raises its own refusals (e.g. ``PaymentDeclined``) and names them at its registration
(``business_failures``); the engine's BusinessFailure is for the engine's own refusals.
One that breaks the rule has its whole delivery rolled back and retried, never a partial
effect committed (this replaces a savepoint per command: two round trips).

A message that dead-letters after its retries tells the orchestrator too, as a technical
failure, so no saga waits for a reply that never comes.
"""

import re
from collections.abc import Callable
from typing import Any

from django.db import transaction

from outbox.consumer import register
from outbox.messages import Channel, Message, as_payload
from outbox.publishing import publish
from sagas.exceptions import BusinessFailure
from sagas.messages import BY_HAND_REFUSED, ORCHESTRATOR, REPLY_TYPE, SagaReply, command_meta, command_span_attributes
from sagas.models import Outcome, Phase
from sagas.outcomes import Decision, OutcomeBook, OutcomeRecord

# Returns the reply's data: a reply contract dataclass, or a dict.
CommandHandler = Callable[[Message, Any], Any]
# Records an operator's "done by hand" in the context's own books, from the evidence given;
# never calls the outside world. Raises a business failure when the books refuse it.
ManualHandler = Callable[[Message, str], Any]
# Called when a forward copy finds its step already decided (compensated, done by hand) after
# its outside call may have taken effect: it undoes that effect, e.g. by publishing a command
# that refunds the charge the call just made.
LateEffectHandler = Callable[[Message, Any, OutcomeRecord], None]
# Called when an operator's record by hand finds its step decided by an automatic copy: the
# effect the operator made by hand (named in the evidence) is then the duplicate, undone the
# same way, or left to the operator when it cannot be.
LostByHandHandler = Callable[[Message, str, OutcomeRecord], None]


class _Decided:
    """What a guarded ``prepare`` hands on when the step was decided before the call: no
    outside call was made."""

    def __repr__(self) -> str:
        return "DECIDED"


DECIDED = _Decided()


def saga_participant(
    channel: Channel | str,
    type: str = "",
    *,
    handle: CommandHandler,
    book: OutcomeBook,
    prepare: Callable[[Message], Any] | None = None,
    manual: ManualHandler | None = None,
    late_effect: LateEffectHandler | None = None,
    find_effect: Callable[[Message], Any] | None = None,
    lost_by_hand: LostByHandHandler | None = None,
    business_failures: tuple[type[Exception], ...] = (),
) -> None:
    """Register a saga command's handler, deciding its step key once (see sagas.outcomes).

    ``handle`` runs only while the step is undecided, under the lock on its key; its data, or
    its business failure, is recorded as the key's final outcome and given to every later copy.
    A copy marked as done by hand (the ``manual`` header an operator's action sets) runs
    ``manual`` instead, without any outside call. ``find_effect`` reads the provider's record
    under the step's key, for a copy that finds its step compensated or done by hand: a
    replayed dead letter of a copy that crashed after its call thus undoes what the call did.
    ``business_failures``: the context's exceptions that refuse the step for a business reason
    (a declined card), answered as BusinessFailure is.
    """
    consumer, type = channel if isinstance(channel, Channel) else (channel, type)
    refusals = (BusinessFailure, *business_failures)

    def guarded_prepare(message: Message) -> Any:
        meta = command_meta(message)
        if meta.manual is not None:
            return DECIDED
        decided = book.peek(meta.idempotency_key)
        if decided in (Decision.COMPENSATED, Decision.MANUAL) and find_effect is not None:
            # Nothing to do, but something to look for: an earlier copy's call may have landed
            # after the step was decided (and the copy died before it could tell). The
            # provider's record under the key, read only, is handed to ``late_effect``.
            return find_effect(message)
        if decided:
            return DECIDED  # nothing to ask the outside world: the books answer
        return prepare(message)

    def handle_command(message: Message, prepared: Any) -> None:
        meta = command_meta(message)  # a command without saga headers is a poison message
        # The step being undone is locked first, then the compensation's own key: always in
        # that order, so a forward copy and a compensation never deadlock.
        undone = book.lock(meta.compensates) if meta.phase == Phase.COMPENSATION and meta.compensates else None
        record = book.lock(meta.idempotency_key)
        if record.decided:
            if late_effect is not None and meta.phase == Phase.FORWARD and prepared is not DECIDED:
                late_effect(message, prepared, record)
            if lost_by_hand is not None and meta.manual is not None and record.outcome != Decision.MANUAL:
                lost_by_hand(message, str(meta.manual.get("evidence", "")), record)
            _reply_recorded(message, record)
            return
        if prepared is DECIDED and meta.manual is None:
            # Decided when peeked, undecided under the lock: only a rolled-back decision does
            # that. Deliver again, so that the outside call is made if it is still needed.
            raise StepUndecided(f"{meta.idempotency_key} was decided when peeked and is not now")
        watch = _WriteWatch()
        try:
            with transaction.get_connection().execute_wrapper(watch):
                if meta.manual is not None:
                    if manual is None:
                        raise BusinessFailure(f"{consumer}/{type} cannot be recorded as done by hand")
                    data = _reply_data(manual(message, str(meta.manual.get("evidence", ""))))
                else:
                    data = _reply_data(handle(message, prepared))
        except refusals as refused:
            failure = refused if isinstance(refused, BusinessFailure) else BusinessFailure(str(refused))
            if watch.wrote:
                raise HandlerWroteBeforeFailing(
                    f"{consumer}/{type} wrote before raising a business failure ({failure.reason}); "
                    "its writes cannot be kept beside a failure reply"
                ) from refused
            if meta.phase == Phase.FORWARD and meta.manual is None:
                # Final: a replayed or resent copy answers the same refusal, and never takes
                # the stock, money or shipment this copy was refused.
                book.decide(record, Decision.REFUSED, error=failure.reason, message_id=message.message_id)
            # A compensation that cannot undo, or a record by hand the books refuse, decides
            # nothing: the saga goes back to an operator, who can still resolve the key.
            data = {BY_HAND_REFUSED: True} if meta.manual is not None else None
            _reply(message, Outcome.BUSINESS_FAILURE, data=data, error=failure.reason)
            return
        by_hand = meta.manual is not None
        book.decide(
            record,
            Decision.MANUAL if by_hand else Decision.DONE,
            data=data,
            evidence=str(meta.manual.get("evidence", "")) if by_hand else "",
            decided_by=str(meta.manual.get("by", "")) if by_hand else "",
            message_id=message.message_id,
        )
        if undone is not None and not undone.decided:
            # Undone before it ever took effect: fenced, so a late copy of it does nothing.
            book.decide(undone, Decision.COMPENSATED, message_id=message.message_id)
        _reply(message, Outcome.MANUAL if by_hand else Outcome.SUCCESS, data=data)

    def on_dead_letter(message: Message, reason: str) -> None:
        try:
            command_meta(message)
        except Exception:  # noqa: BLE001 - no saga to tell
            return
        _reply(message, Outcome.TECHNICAL_FAILURE, error=reason)

    # Without an outside call there is nothing to guard, and the handler stays deliverable
    # in the process that published its command (outbox.dispatch._has_local_handler).
    register(
        consumer,
        type,
        handle=handle_command,
        prepare=guarded_prepare if prepare is not None else None,
        on_dead_letter=on_dead_letter,
        span_attributes=command_span_attributes,
    )


def _reply_data(data: Any) -> dict[str, Any]:
    return as_payload(data) if data is not None else {}


class StepUndecided(RuntimeError):
    """A transient inconsistency between a peek and the lock; the delivery is retried."""


def _reply_recorded(message: Message, record: OutcomeRecord) -> None:
    """Answer a later copy with the outcome recorded under its key, changing nothing."""
    if record.outcome == Decision.REFUSED:
        _reply(message, Outcome.BUSINESS_FAILURE, error=record.error)
    elif record.outcome == Decision.COMPENSATED:
        _reply(message, Outcome.BUSINESS_FAILURE, error="the step was compensated before it took effect")
    elif record.outcome == Decision.MANUAL:
        _reply(message, Outcome.MANUAL, data=record.data)
    else:
        _reply(message, Outcome.SUCCESS, data=record.data)


class HandlerWroteBeforeFailing(RuntimeError):
    """A saga command handler wrote, then raised BusinessFailure: a programming error."""


class _WriteWatch:
    """Notes whether any statement run through it may write."""

    def __init__(self) -> None:
        self.wrote = False

    def __call__(self, execute, sql, params, many, context):
        if not self.wrote and may_write(sql):
            self.wrote = True
        return execute(sql, params, many, context)


# The first keyword, after any leading comments.
_FIRST_KEYWORD = re.compile(r"\s*(?:(?:--[^\n]*(?:\n|$)|/\*.*?\*/)\s*)*([A-Za-z]*)", re.S)
_READS = {"SELECT", "SHOW", "EXPLAIN", "SAVEPOINT", "RELEASE", "ROLLBACK"}
_LOCKING_CLAUSE = re.compile(r"\bFOR\s+(?:NO\s+KEY\s+)?UPDATE\b", re.I)
_MODIFYING = re.compile(r"\b(?:INSERT|UPDATE|DELETE|MERGE)\b", re.I)


def may_write(sql: str) -> bool:
    """Whether a statement may change data: any statement but a plain read counts, and a WITH
    query counts when one of its parts modifies (a data-modifying CTE)."""
    keyword = _FIRST_KEYWORD.match(sql).group(1).upper()
    if keyword == "WITH":
        return bool(_MODIFYING.search(_LOCKING_CLAUSE.sub("", sql)))
    return keyword not in _READS


def _reply(message: Message, outcome: str, *, data: dict[str, Any] | None = None, error: str = "") -> None:
    meta = command_meta(message)
    publish(
        type=REPLY_TYPE,
        destination=ORCHESTRATOR,
        aggregate="saga",
        aggregate_id=meta.saga_id,
        correlation_id=meta.saga_id,
        payload=as_payload(
            SagaReply(
                saga_id=meta.saga_id,
                step=meta.step,
                phase=meta.phase,
                attempt=meta.attempt,
                outcome=outcome,
                data=data or {},
                error=error,
            )
        ),
    )
