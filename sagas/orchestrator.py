"""The saga orchestrator: starts sagas, applies replies, sends the next command.

Every transition happens in one transaction that locks the saga row, records the step log
and publishes the next command through the outbox. A reply is applied only when it answers
the step, phase and attempt the saga waits for; any other (stale, duplicate, reordered) is
recorded as an event and ignored.
"""

import logging
import random
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models.functions import Now
from django.utils import timezone

from common import metrics
from common.logging import bind_context, reset_context
from common.tracing import current_traceparent
from outbox.exceptions import OutsideTransaction
from outbox.messages import Message
from outbox.publishing import publish
from outbox.selectors import any_unpublished
from sagas.definition import Compensating, SagaDefinition, Step, StepKind, definition_for
from sagas.locks import lock_saga
from sagas.messages import BY_HAND_REFUSED, ORCHESTRATOR, SagaReply
from sagas.models import Outcome, Phase, SagaEvent, SagaInstance, SagaState, SagaStep
from sagas.rows import saga_insert, saga_save, step_record_reply, step_record_sent
from sagas.tracing import traced_step

logger = logging.getLogger(__name__)
# The engine's own entry in a saga's stored data (the definition's data class does not declare it).
COMPENSATION_REASON = "failure_reason"


def saga_start(
    *,
    definition: SagaDefinition,
    data: Any,
    aggregate: str,
    aggregate_id: object,
    idempotency_key: str = "",
    saga_id: uuid.UUID | None = None,
) -> SagaInstance:
    """Create a saga and send its first command, in the caller's transaction."""
    if not transaction.get_connection().in_atomic_block:
        raise OutsideTransaction("saga_start() must run in the transaction that creates the aggregate")
    local = []
    for step in definition.steps:
        if not step.is_local:
            break
        local.append(step.name)
    first = definition.steps[len(local)]
    saga = SagaInstance(
        id=saga_id or uuid.uuid4(),
        definition_name=definition.name,
        definition_version=definition.version,
        aggregate=aggregate,
        aggregate_id=str(aggregate_id),
        idempotency_key=idempotency_key,
        traceparent=current_traceparent(),
        current_step=first.name,
        completed_steps=local,
        data=definition.dump(data),
    )
    # Inserted once, after the first command: the step log's foreign key is checked at commit.
    first_attempt = _send(saga, definition, new_step=True)
    saga_insert(saga)
    # Its step log is known, as a prefetch would have read it: saga.steps.all() reads nothing.
    saga._prefetched_objects_cache = {"steps": [first_attempt]}
    metrics.saga_started(definition=definition.name)
    return saga


def reply_apply(message: Message, _prepared: object = None) -> None:
    """The orchestrator's handler of step replies (runs in the inbox transaction)."""
    reply = message.parse(SagaReply)
    token = bind_context(saga_id=reply.saga_id, step=reply.step, step_attempt=reply.attempt)
    try:
        _apply(reply, message)
    finally:
        reset_context(token)


def _apply(reply: SagaReply, message: Message) -> None:
    try:
        saga = lock_saga(reply.saga_id)
    except (SagaInstance.DoesNotExist, ValueError):
        logger.error("reply for an unknown saga ignored")
        return
    definition = definition_for(saga.definition_name, saga.definition_version)
    answer = {
        "reply": {"outcome": reply.outcome, "data": reply.data, "error": reply.error},
        "reply_message_id": message.message_id,
        # The database's clock, which gave the attempt its send time: a step's duration is
        # measured on one clock, never across the web's and the database's.
        "replied_at": Now(),
    }
    earlier = _decides_an_earlier_attempt(saga, reply)
    if earlier:
        # Every attempt of a step shares its key, and the participant's first decision under
        # the key is final (sagas.outcomes): an earlier attempt's decision is the one the
        # current attempt would bring back. Waiting for that instead would only let resends
        # pile up behind a slow queue. The current attempt is superseded; its answer, when it
        # comes, is recorded and ignored.
        SagaStep.objects.filter(
            saga=saga, step=reply.step, phase=reply.phase, attempt=saga.attempt, outcome=Outcome.PENDING
        ).update(outcome=Outcome.SUPERSEDED)
        SagaStep.objects.filter(saga=saga, step=reply.step, phase=reply.phase, attempt=reply.attempt).update(
            outcome=reply.outcome, error=reply.error, **answer
        )
    expected = earlier or (
        not saga.is_terminal
        and reply.step == saga.current_step
        and reply.phase == saga.phase
        and reply.attempt == saga.attempt
        # One statement finds and records the awaited attempt; a duplicate finds it answered.
        and step_record_reply(
            saga_id=saga.id,
            step=reply.step,
            phase=reply.phase,
            attempt=reply.attempt,
            reply=answer["reply"],
            message_id=message.message_id,
            outcome=reply.outcome,
            error=reply.error,
        )
    )
    if not expected and _decides_the_failed_current_attempt(saga, reply):
        # The current attempt's command gave up as a dead letter (which answered for it as a
        # technical failure) and was replayed: its decision is the key's final one, and the
        # saga, stuck or failed on that dead letter, goes on from it.
        expected = bool(
            SagaStep.objects.filter(
                saga=saga,
                step=reply.step,
                phase=reply.phase,
                attempt=reply.attempt,
                outcome=Outcome.TECHNICAL_FAILURE,
            ).update(outcome=reply.outcome, error=reply.error, **answer)
        )
        if expected and saga.state == SagaState.FAILED:
            saga_revive_failed(saga)
    if not expected:
        # Keep what the participant said even when it comes too late to count.
        attempt_rows = SagaStep.objects.filter(saga=saga, step=reply.step, phase=reply.phase, attempt=reply.attempt)
        recorded = attempt_rows.values_list("outcome", flat=True).first()
        attempt_rows.filter(outcome__in=[Outcome.PENDING, Outcome.SUPERSEDED], reply__isnull=True).update(**answer)
        SagaEvent.objects.create(
            saga=saga,
            kind="reply_ignored",
            message_id=message.message_id,
            detail=(
                f"{reply.outcome} for {reply.step}/{reply.phase} attempt {reply.attempt}{_why_ignored(recorded)};"
                f" the saga is {saga.state} at {saga.current_step or '-'}/{saga.phase} attempt {saga.attempt}"
            ),
        )
        logger.info("stale or duplicate reply ignored")
        return

    metrics.saga_step_done(step=reply.step, phase=reply.phase, outcome=reply.outcome, started_at=saga.step_started_at)
    step = definition.step(reply.step)
    if reply.outcome in (Outcome.SUCCESS, Outcome.MANUAL):
        _on_success(saga, definition, step, reply)
    elif reply.outcome == Outcome.BUSINESS_FAILURE and reply.data.get(BY_HAND_REFUSED):
        # The participant's books refused the operator's record; nothing was decided, and the
        # saga goes back to the operator as it was.
        refused = f"{step.name} ({saga.phase}) could not be recorded as done by hand: {reply.error}"
        if saga.phase == Phase.COMPENSATION:
            _fail(saga, refused)
            SagaEvent.objects.create(saga=saga, kind="manual_refused", detail=refused)
        else:
            _flag_stuck(saga, refused)
    elif reply.outcome == Outcome.BUSINESS_FAILURE and saga.phase == Phase.FORWARD and step.kind != StepKind.RETRIABLE:
        _begin_compensation(saga, definition, reason=reply.error or f"{step.name} failed")
    elif reply.outcome == Outcome.BUSINESS_FAILURE and saga.phase == Phase.COMPENSATION:
        # The participant cannot undo the step (e.g. a charge made by hand that the gateway does
        # not know): retrying cannot help, and reporting it undone would be a lie.
        _retry_or_escalate(saga, definition, step, error=reply.error, exhausted=True)
    else:
        _retry_or_escalate(saga, definition, step, error=reply.error or reply.outcome)
    saga_save(saga)


def _decides_an_earlier_attempt(saga: SagaInstance, reply: SagaReply) -> bool:
    """Whether ``reply`` answers an earlier attempt of the step the saga waits for with the
    participant's decision (not a technical failure, nor a record by hand it refused)."""
    return (
        not saga.is_terminal
        and reply.step == saga.current_step
        and reply.phase == saga.phase
        and reply.attempt < saga.attempt
        and reply.outcome in (Outcome.SUCCESS, Outcome.MANUAL, Outcome.BUSINESS_FAILURE)
        and not reply.data.get(BY_HAND_REFUSED)
    )


def _why_ignored(recorded: str | None) -> str:
    """What the step log says of the attempt an ignored reply answers, so that the timeline's
    line explains itself (a reply to the very attempt the saga is at is ignored only so)."""
    if recorded is None:
        return ": no such attempt was sent"
    if recorded == Outcome.SUPERSEDED:
        return ": a later attempt superseded it"
    if recorded == Outcome.PENDING:
        return ""
    return f": that attempt was answered already ({recorded})"


def _decides_the_failed_current_attempt(saga: SagaInstance, reply: SagaReply) -> bool:
    """Whether ``reply`` brings the participant's decision for the attempt the saga is at,
    one already answered as a technical failure (then checked on its row, in the update)."""
    return (
        saga.state in (SagaState.RUNNING, SagaState.COMPENSATING, SagaState.FAILED)
        and reply.step == saga.current_step
        and reply.phase == saga.phase
        and reply.attempt == saga.attempt
        and reply.outcome in (Outcome.SUCCESS, Outcome.MANUAL, Outcome.BUSINESS_FAILURE)
        and not reply.data.get(BY_HAND_REFUSED)
    )


def _on_success(saga: SagaInstance, definition: SagaDefinition, step: Step, reply: SagaReply) -> None:
    # A compensation's answer is data too: the refund's amount is what the cancellation
    # notice tells the customer, and a notice built without it announces no refund.
    on_reply = step.on_reply if saga.phase == Phase.FORWARD else step.on_compensated
    if on_reply is not None and reply.data:
        saga.data = {**saga.data, **on_reply(definition.load(saga.data), reply.data)}
    # The step is done: whatever flagged it is over, and the next step starts unflagged.
    saga.stuck, saga.stuck_reason, saga.stuck_since = False, "", None
    if saga.phase == Phase.COMPENSATION:
        saga.compensated_steps = [*saga.compensated_steps, step.name]
        _next_compensation(saga, definition)
        return
    saga.completed_steps = [*saga.completed_steps, step.name]
    if saga.cancel_requested and step.kind == StepKind.COMPENSATABLE:
        _begin_compensation(saga, definition, reason=saga.failure_reason or "cancelled")
        return
    index = definition.index(step.name) + 1
    if index >= len(definition.steps):
        _finish(saga, SagaState.COMPLETED)
        return
    saga.current_step = definition.steps[index].name
    saga.attempt = 0
    _send(saga, definition, new_step=True)


def _begin_compensation(saga: SagaInstance, definition: SagaDefinition, *, reason: str) -> None:
    logger.info("saga compensating", extra={"reason": reason})
    saga.state = SagaState.COMPENSATING
    saga.failure_reason = saga.failure_reason or reason
    # Kept beside the data as compensation began: a compensation retried after the saga failed
    # tells the customer why the order was cancelled, not why the compensation failed.
    saga.data = {**saga.data, COMPENSATION_REASON: saga.failure_reason}
    saga.stuck, saga.stuck_reason, saga.stuck_since = False, "", None
    _next_compensation(saga, definition)


def _next_compensation(saga: SagaInstance, definition: SagaDefinition) -> None:
    """Compensate the completed steps in reverse order, skipping those with nothing to undo."""
    remaining = [
        name
        for name in reversed(saga.completed_steps)
        if definition.step(name).compensation is not None and name not in saga.compensated_steps
    ]
    if not remaining:
        _finish(saga, SagaState.COMPENSATED)
        return
    saga.current_step = remaining[0]
    saga.attempt = 0
    _send(saga, definition, new_step=True)


def _finish(saga: SagaInstance, state: str) -> None:
    saga.state = state
    saga.current_step = ""
    saga.finished_at = timezone.now()
    saga.step_deadline = None
    saga.stuck, saga.stuck_reason, saga.stuck_since = False, "", None
    logger.info("saga finished", extra={"state": state})
    _count_finish(saga, state)


def _fail(saga: SagaInstance, reason: str) -> None:
    """The compensation gave up: the saga waits for an operator as failed, a state of its own.
    It is not also flagged stuck: one saga, one banner, and one count on every page."""
    saga.state = SagaState.FAILED
    saga.failure_reason = reason
    saga.finished_at = timezone.now()
    saga.stuck, saga.stuck_reason, saga.stuck_since = False, "", None
    logger.error("saga compensation failed", extra={"reason": reason})
    _count_finish(saga, SagaState.FAILED)


def _count_finish(saga: SagaInstance, state: str) -> None:
    """Count a saga's end once: a failed saga that an operator repairs ends again later
    (compensated), and counting that too would report more finishes than starts."""
    if saga.first_finished_at is not None:
        return
    saga.first_finished_at = saga.finished_at
    metrics.saga_finished(definition=saga.definition_name, state=state)


def saga_revive_failed(saga: SagaInstance) -> None:
    """A failed saga compensating again (an operator's repair, or the answer that its failed
    compensation was done after all). The reason it compensates is the one it began with: the
    failure of the compensation stays in its step log, not on its banner once repaired."""
    saga.state = SagaState.COMPENSATING
    saga.finished_at = None
    saga.failure_reason = saga.data.get(COMPENSATION_REASON) or saga.failure_reason


def _retry_or_escalate(
    saga: SagaInstance, definition: SagaDefinition, step: Step, *, error: str, exhausted: bool = False
) -> None:
    """A technical failure: retry with the same key and backoff until the step's limits, then
    flag the saga stuck (forward) or failed (compensation) for an operator."""
    now = timezone.now()
    exhausted = (
        exhausted
        or saga.attempt >= settings.SAGA_STEP_MAX_ATTEMPTS
        or (saga.step_deadline is not None and now >= saga.step_deadline)
    )
    if not exhausted or (step.kind == StepKind.RETRIABLE and saga.phase == Phase.FORWARD):
        if exhausted and not saga.stuck:
            # A retriable step is never given up on, but an operator should know it struggles.
            _flag_stuck(saga, f"{step.name} keeps failing after {saga.attempt} attempts: {error}")
        _send(saga, definition, new_step=False, delay=_backoff(saga.attempt))
        return
    if saga.phase == Phase.COMPENSATION:
        _fail(
            saga,
            f"compensation {step.name} failed after {saga.attempt} attempts: {error}"
            + (f" (saga failed because: {saga.failure_reason})" if saga.failure_reason else ""),
        )
        return
    _flag_stuck(saga, f"{step.name} failed after {saga.attempt} attempts: {error}")


def _flag_stuck(saga: SagaInstance, reason: str) -> None:
    """Flag the saga for an operator, once per incident: the sweeper flags a step that went
    unanswered past its deadline while its last attempt may still run, and that attempt's
    failure, when it comes, is the same incident. It keeps the first flag's time (how long the
    saga has waited) and tells the newer reason; it is not a second event nor a second count."""
    if saga.stuck:
        saga.stuck_reason = reason
        return
    saga.stuck = True
    saga.stuck_reason = reason
    saga.stuck_since = timezone.now()
    SagaEvent.objects.create(saga=saga, kind="stuck", detail=reason)
    logger.error("saga stuck", extra={"reason": reason})
    metrics.saga_stuck(step=saga.current_step)


def _command_waits_in_outbox(saga: SagaInstance) -> bool:
    """Whether the current attempt's command is still in the outbox, not yet handed to the broker."""
    return any_unpublished(
        SagaStep.objects.filter(saga=saga, step=saga.current_step, phase=saga.phase, attempt=saga.attempt).values(
            "command_message_id"
        )
    )


@traced_step
def _send(
    saga: SagaInstance,
    definition: SagaDefinition,
    *,
    new_step: bool,
    delay: timedelta | None = None,
    manual: dict[str, str] | None = None,
) -> SagaStep:
    """Publish the command of the current step (or its compensation) as a new attempt; returns
    its row of the step log. ``manual``: the copy an operator's "done by hand" sends, carrying
    who, why and the evidence, for the participant to record under the step's key; it is
    handled in this process right after the commit, ahead of any backlog of copies."""
    step = definition.step(saga.current_step)
    phase = saga.phase
    data = definition.load(saga.data)
    if phase == Phase.FORWARD:
        assert step.action is not None, f"{step.name} has no forward command"
        command = step.action(data)
    else:
        assert step.compensation is not None, f"{step.name} has no compensation"
        context = Compensating(
            forward_key=saga.step_key(step.name, Phase.FORWARD),
            failure_reason=saga.data.get(COMPENSATION_REASON, saga.failure_reason),
        )
        command = step.compensation(data, context)
    if saga.attempt > 0:  # a new attempt of a step: the one before it no longer counts
        SagaStep.objects.filter(saga=saga, step=step.name, phase=phase, outcome=Outcome.PENDING).update(
            outcome=Outcome.SUPERSEDED
        )
    saga.attempt += 1
    key = saga.step_key(step.name, phase)
    headers: dict[str, Any] = {
        "saga_id": str(saga.id),
        "step": step.name,
        "phase": phase,
        "attempt": saga.attempt,
        "idempotency_key": key,
        "reply_to": ORCHESTRATOR,
        # What the saga is about, for the participant's span (sagas.messages.command_span_attributes).
        "aggregate": saga.aggregate,
        "aggregate_id": saga.aggregate_id,
    }
    if phase == Phase.COMPENSATION:
        headers["compensates"] = saga.step_key(step.name, Phase.FORWARD)
    if manual is not None:
        headers["manual"] = manual
    message = publish(
        type=command.type,
        destination=command.destination,
        payload=command.payload,
        # A record by hand is not ordered behind the saga's other messages: it must overtake
        # a copy of the step still waiting in the outbox, which then finds it decided.
        aggregate="saga" if manual is None else "saga_step",
        aggregate_id=saga.id if manual is None else key,
        correlation_id=str(saga.id),
        headers=headers,
        delay=delay,
        deliver_here=manual is not None,
    )
    attempt = step_record_sent(
        saga_id=saga.id,
        step=step.name,
        phase=phase,
        attempt=saga.attempt,
        idempotency_key=key,
        command_type=command.type,
        message_id=message.message_id,
    )
    now = timezone.now()
    if new_step:
        saga.step_started_at = now
        saga.step_deadline = now + (step.deadline or timedelta(seconds=settings.SAGA_STEP_DEADLINE_SECONDS))
    saga.last_sent_at = now + (delay or timedelta())
    saga.updated_at = now
    return attempt


def _resend_after(attempt: int) -> timedelta:
    """How long an attempt may go unanswered before it is sent again: doubling with each
    attempt, so that under a backlog resends do not pile onto the very queue that is late."""
    return timedelta(seconds=settings.SAGA_RESEND_AFTER_SECONDS * 2 ** min(max(attempt - 1, 0), 6))


def _backoff(attempt: int) -> timedelta:
    ceiling = min(settings.SAGA_RETRY_MAX_SECONDS, settings.SAGA_RETRY_BASE_SECONDS * 2 ** max(0, attempt - 1))
    return timedelta(seconds=random.uniform(ceiling / 2, ceiling))


# ---------------------------------------------------------------------------
# Requests from outside the saga: cancellation, the sweeper, operators.
# ---------------------------------------------------------------------------


def saga_request_cancel(*, saga_id: object, reason: str) -> SagaInstance:
    """Stop forward progress and compensate what completed.

    A step in flight is not raced: the saga waits for its reply, then compensates it along
    with the others, so a compensation can never overtake the effect it undoes.
    """
    from sagas.exceptions import CancellationRefused

    with transaction.atomic():
        saga = lock_saga(saga_id)
        definition = definition_for(saga.definition_name, saga.definition_version)
        if saga.state in (SagaState.COMPENSATING, SagaState.COMPENSATED) or saga.cancel_requested:
            return saga
        if saga.state != SagaState.RUNNING:
            raise CancellationRefused(f"the saga is {saga.state}; it can no longer be cancelled")
        if definition.step(saga.current_step).kind != StepKind.COMPENSATABLE:
            raise CancellationRefused(
                f"the saga is past its pivot (at {saga.current_step}); it can no longer be cancelled"
            )
        saga.cancel_requested = True
        saga.failure_reason = reason
        saga.updated_at = timezone.now()
        SagaEvent.objects.create(saga=saga, kind="cancel_requested", detail=reason)
        saga_save(saga)
    return saga


def saga_sweep(*, limit: int = 500) -> dict[str, int]:
    """Find active sagas whose command went unanswered or whose step passed its deadline.

    An unanswered command is sent again (new attempt, same idempotency key): messages a broker
    lost in a restart are recovered this way. Past the deadline the saga is flagged stuck
    (forward) or failed (compensation).
    """
    now = timezone.now()
    resend_before = now - timedelta(seconds=settings.SAGA_RESEND_AFTER_SECONDS)
    from django.db.models import Q

    from sagas.definition import registered_definitions

    # Stuck sagas wait for an operator, except at a retriable step, which is retried for ever.
    # They are left out here, not skipped below: hundreds of them would otherwise fill every
    # sweep's batch and starve the sagas that still need a resend.
    retriable = {
        step.name
        for definition in registered_definitions()
        for step in definition.steps
        if step.kind == StepKind.RETRIABLE
    }
    # A stuck compensation is resent too: it must happen, and an unanswered command may only
    # sit behind a backlog.
    resent_while_stuck = Q(current_step__in=retriable) | Q(state=SagaState.COMPENSATING)
    candidates = list(
        SagaInstance.objects.filter(state__in=[SagaState.RUNNING, SagaState.COMPENSATING])
        .filter(
            Q(stuck=False, last_sent_at__lt=resend_before)
            | Q(stuck=False, step_deadline__lt=now)
            | (Q(stuck=True, last_sent_at__lt=resend_before) & resent_while_stuck)
        )
        .order_by("last_sent_at")
        .values_list("id", flat=True)[:limit]
    )
    counts = {"resent": 0, "stuck": 0, "failed": 0}
    for saga_id in candidates:
        with transaction.atomic():
            saga = lock_saga(saga_id)
            if saga.state not in (SagaState.RUNNING, SagaState.COMPENSATING):
                continue
            definition = definition_for(saga.definition_name, saga.definition_version)
            step = definition.step(saga.current_step)
            if saga.stuck and step.kind != StepKind.RETRIABLE and saga.phase != Phase.COMPENSATION:
                continue  # an operator's turn; retriable steps and compensations keep being retried
            token = bind_context(saga_id=str(saga.id), step=step.name)
            try:
                if saga.step_deadline is not None and now >= saga.step_deadline and not saga.stuck:
                    if saga.phase == Phase.COMPENSATION:
                        # Unanswered is not failed: the command may wait behind a backlog, and
                        # a compensation must happen. An operator sees the flag; the resends go
                        # on, and the saga fails only on failure replies past its attempts.
                        _flag_stuck(saga, f"compensation {step.name}: no reply before the step's deadline")
                    else:
                        _retry_or_escalate(
                            saga, definition, step, error="no reply before the step's deadline", exhausted=True
                        )
                    counts["failed" if saga.state == SagaState.FAILED else "stuck"] += 1
                elif saga.last_sent_at is not None and saga.last_sent_at < now - _resend_after(saga.attempt):
                    if _command_waits_in_outbox(saga):
                        continue  # not lost: it waits behind a backlog, which a copy would only grow
                    # Before the attempt it causes, as the timeline lists them.
                    SagaEvent.objects.create(saga=saga, kind="resent", detail="no reply in time; command sent again")
                    _send(saga, definition, new_step=False)
                    counts["resent"] += 1
                saga_save(saga)
            finally:
                reset_context(token)
    if any(counts.values()):
        logger.info("saga sweep", extra=counts)
    return counts
