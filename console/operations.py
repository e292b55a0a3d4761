"""Operator actions on a saga: retry the current step, compensate, retry a failed
compensation, mark a step done by hand, and replay or discard a dead letter.

Each action runs in one transaction that locks the saga row, so it serialises with the
orchestrator applying a reply and with the sweeper: an operator can never race a reply into
a half-applied state. Each is valid only in some states; :func:`saga_action_refusal` is the
one place that says which, used both here (to refuse) and by the console (to show only the
buttons that can work). Every attempt, done or refused, leaves an audit row.

The transitions reuse the orchestrator's own functions, so a step sent by an operator is the
same command, with the same idempotency key, as one the engine would send.
"""

import logging
import uuid
from collections.abc import Callable

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction
from django.utils import timezone

from common.logging import bind_context, reset_context
from console.audit import OPERATOR_TEXT_MAX, audit_record, audit_refusal
from console.four_eyes import (
    ApprovalRequested,
    approval_pending_refusal,
    approval_request_create,
    four_eyes_required,
)
from console.models import ApprovalRequest
from console.selectors import dead_letter_saga
from outbox.models import DeadLetter, OutboxMessage
from outbox.services import DiscardRefused, ReplayRefused, dead_letter_discard, dead_letter_replay
from sagas.definition import SagaDefinition, definition_for
from sagas.exceptions import SagaActionRefused
from sagas.locks import lock_saga
from sagas.models import Phase, SagaEvent, SagaInstance
from sagas.rows import saga_save
from sagas.transitions import (
    SagaAction,
    attempt_fate,
    saga_action_refusal,
    saga_actions_available,
    saga_position,
    transition_compensate,
    transition_mark_step_done,
    transition_retry_compensation,
    transition_retry_step,
)

# The console's one place for operator actions; what a saga's state allows is the engine's.
__all__ = [
    "ACTION_LABELS",
    "ACTION_PERMISSIONS",
    "DISCARD_DEAD_LETTER",
    "DISCARD_PERMISSION",
    "REPLAY_DEAD_LETTER",
    "REPLAY_PERMISSION",
    "SagaAction",
    "attempt_fate",
    "dead_letter_discard_by_operator",
    "dead_letter_replay_by_operator",
    "saga_action_preview",
    "saga_action_refusal",
    "saga_actions_available",
    "saga_compensate",
    "saga_mark_step_done",
    "saga_of",
    "saga_position",
    "saga_retry_compensation",
    "saga_retry_step",
]

logger = logging.getLogger(__name__)

Actor = AbstractBaseUser | AnonymousUser | None


# The permission each action needs; the console checks it before showing a button or
# accepting a POST.
ACTION_PERMISSIONS: dict[str, str] = {
    SagaAction.RETRY_STEP: "sagas.retry_saga",
    SagaAction.COMPENSATE: "sagas.compensate_saga",
    SagaAction.RETRY_COMPENSATION: "sagas.retry_compensation_saga",
    SagaAction.MARK_STEP_DONE: "sagas.mark_step_done_saga",
}
REPLAY_DEAD_LETTER = "replay_dead_letter"
REPLAY_PERMISSION = "outbox.replay_deadletter"
DISCARD_DEAD_LETTER = "discard_dead_letter"
DISCARD_PERMISSION = "outbox.discard_deadletter"

ACTION_LABELS: dict[str, str] = {
    SagaAction.RETRY_STEP: "Retry the current step",
    SagaAction.COMPENSATE: "Compensate",
    SagaAction.RETRY_COMPENSATION: "Retry the failed compensation",
    SagaAction.MARK_STEP_DONE: "Mark the step done by hand",
}


def saga_action_preview(*, saga: SagaInstance, action: str) -> str:
    """What the action will do to this saga, in words, for the confirmation page."""
    definition = definition_for(saga.definition_name, saga.definition_version)
    step, phase = saga.current_step, saga.phase
    if action in (SagaAction.RETRY_STEP, SagaAction.RETRY_COMPENSATION):
        if action == SagaAction.RETRY_COMPENSATION:
            phase = Phase.COMPENSATION
        return (
            f"Sends attempt {saga.attempt + 1} of {step} ({phase}) now, with the same idempotency key"
            f" {saga.step_key(step, phase)}, so an effect that already happened is not repeated. The step's deadline"
            " starts again; if this attempt fails too, the saga is flagged for an operator again."
            + (" The saga goes back to compensating." if action == SagaAction.RETRY_COMPENSATION else "")
        )
    if action == SagaAction.COMPENSATE:
        if not saga.stuck:
            return (
                f"{step} attempt {saga.attempt} is in flight, so the saga is asked to cancel: it stops going forward"
                " and compensates what completed as soon as that attempt answers (compensating now could race it)."
            )
        done = [*saga.completed_steps, *([] if step in saga.completed_steps else [step])]
        chain = [name for name in reversed(done) if definition.step(name).compensation is not None]
        return (
            f"Stops forward progress now. {_fate_in_words(saga)} {step} is treated as possibly done and compensated"
            " too: its compensation undoes what took effect and fences the step, so a copy that arrives later"
            " takes no effect, and one whose outside call lands anyway is undone by its participant."
            f" Compensations, in order: {', '.join(chain) or 'none'}."
        )
    if action == SagaAction.MARK_STEP_DONE:
        if phase == Phase.FORWARD:
            index = definition.index(step) + 1
            following = definition.steps[index].name if index < len(definition.steps) else None
            then = f"sends {following} next" if following else "completes the saga"
        else:
            then = "sends the next compensation, or ends the saga compensated"
        return (
            f"Sends your record of {step} ({phase}), with your evidence, to its participant, which keeps it under"
            f" the step's key {saga.step_key(step, phase)}. {_fate_in_words(saga)} If no copy of the step decided"
            f" first, your record is final: every later copy does nothing, and the saga {then}. If a copy decided"
            " first, the participant answers with that outcome and the saga follows it. Only do this when the"
            " effect really happened (e.g. refunded in the provider's console), and give the provider's id."
        )
    raise ValueError(f"unknown saga action {action!r}")


def _fate_in_words(saga: SagaInstance) -> str:
    attempt, fate = attempt_fate(saga)
    if attempt is None:
        return "No attempt of it was sent."
    if fate == "answered":
        return f"Its last attempt, {attempt.attempt}, was answered ({attempt.outcome}): nothing of it is in flight."
    if fate == "dead_lettered":
        return (
            f"Its last attempt, {attempt.attempt}, gave up as a dead letter: nothing is in flight unless it is"
            " replayed."
        )
    return (
        f"Its last attempt, {attempt.attempt}, was sent and has neither been answered nor dead-lettered: it is"
        " still in flight and may take effect."
    )


# ---------------------------------------------------------------------------
# The services.
# ---------------------------------------------------------------------------


def saga_retry_step(
    *,
    saga_id: object,
    actor: Actor,
    reason: str,
    expected_position: str | None = None,
    approval: ApprovalRequest | None = None,
) -> SagaInstance:
    """Send a new attempt of the current step (or compensation) now, with the same idempotency
    key, so a step that already took effect is not done twice. Clears the stuck flag and
    restarts the step's deadline; if this attempt fails too, the engine flags it again."""
    return _operate(
        action=SagaAction.RETRY_STEP,
        saga_id=saga_id,
        actor=actor,
        reason=reason,
        expected_position=expected_position,
        approval=approval,
        perform=transition_retry_step,
    )


def saga_compensate(
    *,
    saga_id: object,
    actor: Actor,
    reason: str,
    expected_position: str | None = None,
    approval: ApprovalRequest | None = None,
) -> SagaInstance:
    """Stop forward progress and run the compensation chain.

    A stuck saga (nothing in flight any more) compensates at once, and its current step is
    treated as possibly done: it is compensated too. Its compensation copes with nothing to
    undo and leaves a tombstone, so a forward command delivered late cannot take effect.

    A saga whose step is still in flight is not raced: it is asked to cancel, exactly as a
    customer's cancellation, and compensates when that step answers. Compensating before the
    answer could let the refund look for a charge the gateway is making at that very moment.
    """
    return _operate(
        action=SagaAction.COMPENSATE,
        saga_id=saga_id,
        actor=actor,
        reason=reason,
        expected_position=expected_position,
        approval=approval,
        perform=transition_compensate,
    )


def saga_retry_compensation(
    *,
    saga_id: object,
    actor: Actor,
    reason: str,
    expected_position: str | None = None,
    approval: ApprovalRequest | None = None,
) -> SagaInstance:
    """Run a failed compensation again: the saga goes back to compensating and sends a new
    attempt of the compensation it failed on, with the same idempotency key."""
    return _operate(
        action=SagaAction.RETRY_COMPENSATION,
        saga_id=saga_id,
        actor=actor,
        reason=reason,
        expected_position=expected_position,
        approval=approval,
        perform=transition_retry_compensation,
    )


def saga_mark_step_done(
    *,
    saga_id: object,
    actor: Actor,
    reason: str,
    evidence: str,
    expected_position: str | None = None,
    approval: ApprovalRequest | None = None,
) -> SagaInstance:
    """Record that the operator did the current step (or compensation) outside the system,
    e.g. refunded in the provider's console, and continue as on a success reply: the next
    step, the next compensation, or the end of the saga."""
    return _operate(
        action=SagaAction.MARK_STEP_DONE,
        saga_id=saga_id,
        actor=actor,
        reason=reason,
        expected_position=expected_position,
        approval=approval,
        perform=transition_mark_step_done,
        evidence=evidence.strip(),
    )


def dead_letter_replay_by_operator(*, dead_letter_id: int, actor: Actor, reason: str) -> OutboxMessage:
    """Replay a dead letter (same message id; consumers absorb it if it was in fact handled)
    and audit it. The audit row names the saga when the message belongs to one.

    Of a saga's letters only the current attempt's goes again, and resumes the saga (stuck or
    failed on it). A superseded one, or one of a finished saga, is refused with the reason: the
    saga would only ignore it; it is discarded instead, so that the list can be emptied."""
    target = f"deadletter:{dead_letter_id}"
    dead_letter = DeadLetter.objects.get(pk=dead_letter_id)
    link = dead_letter_saga(dead_letter)
    saga_id = link.saga_id if link is not None else saga_of(dead_letter.correlation_id)
    reason = reason.strip()
    refusal = _text_refusal(reason=reason)
    message = None
    if refusal is None:
        try:
            # The replay and its audit row commit together.
            with transaction.atomic():
                if link is not None:
                    # Judged on the saga locked, as the orchestrator and the operators' actions
                    # see it: not on a position a reply may have changed since it was read.
                    lock_saga(link.saga_id)
                    link = dead_letter_saga(dead_letter)
                    if link is not None and link.replay_refusal is not None:
                        raise ReplayRefused(link.replay_refusal)
                message = dead_letter_replay(dead_letter=dead_letter)
                audit_record(
                    actor=actor,
                    action=REPLAY_DEAD_LETTER,
                    saga_id=saga_id,
                    target=target,
                    reason=reason,
                    outcome=(
                        f"replayed {dead_letter.type or 'message'} {message.message_id} to {dead_letter.consumer}"
                        f" (replay #{dead_letter.replay_count})"
                    ),
                )
        except ReplayRefused as exc:
            refusal = str(exc)
    if refusal is not None:
        audit_refusal(
            actor=actor,
            action=REPLAY_DEAD_LETTER,
            saga_id=saga_id,
            target=target,
            reason=reason,
            outcome=f"refused: {refusal}",
        )
        raise SagaActionRefused(refusal)
    assert message is not None
    return message


def dead_letter_discard_by_operator(*, dead_letter_id: int, actor: Actor, reason: str) -> DeadLetter:
    """Take a dead letter off the list with the operator's reason, audited (naming its saga
    when it has one); the row is kept, marked discarded, with who, when and why."""
    target = f"deadletter:{dead_letter_id}"
    dead_letter = DeadLetter.objects.get(pk=dead_letter_id)
    link = dead_letter_saga(dead_letter)
    saga_id = link.saga_id if link is not None else saga_of(dead_letter.correlation_id)
    reason = reason.strip()
    refusal = _text_refusal(reason=reason)
    if refusal is None:
        try:
            # The discard and its audit row commit together.
            with transaction.atomic():
                discarded = dead_letter_discard(dead_letter_id=dead_letter.pk, by=_actor_name(actor), reason=reason)
                audit_record(
                    actor=actor,
                    action=DISCARD_DEAD_LETTER,
                    saga_id=saga_id,
                    target=target,
                    reason=reason,
                    outcome=(
                        f"discarded {dead_letter.type or 'message'} {dead_letter.message_id} of {dead_letter.consumer}"
                        + (f" ({link.mark}: {link.why})" if link is not None else "")
                    ),
                )
            return discarded
        except DiscardRefused as exc:
            refusal = str(exc)
    audit_refusal(
        actor=actor,
        action=DISCARD_DEAD_LETTER,
        saga_id=saga_id,
        target=target,
        reason=reason,
        outcome=f"refused: {refusal}",
    )
    raise SagaActionRefused(refusal)


# ---------------------------------------------------------------------------
# The transitions. Each runs with the saga row locked and returns the audit outcome.
# ---------------------------------------------------------------------------

Perform = Callable[..., str]


def _operate(
    *,
    action: SagaAction,
    saga_id: object,
    actor: Actor,
    reason: str,
    expected_position: str | None,
    perform: Perform,
    evidence: str = "",
    approval: ApprovalRequest | None = None,
) -> SagaInstance:
    """Run the action on the locked saga, or refuse it; an action on money without a second
    operator's approval (``approval``, the request being approved) is kept as a request instead."""
    reason = reason.strip()
    actor_name = _actor_name(actor)
    refusal: str | None = None
    requested: ApprovalRequest | None = None
    token = bind_context(saga_id=str(saga_id), operator=actor_name, operator_action=str(action))
    try:
        with transaction.atomic():
            saga = lock_saga(saga_id)
            definition = definition_for(saga.definition_name, saga.definition_version)
            refusal = _refusal(
                saga, definition, action, reason=reason, evidence=evidence, expected_position=expected_position
            )
            if refusal is None and approval is not None:
                refusal = _approved_position_refusal(saga, approval)
            if refusal is None and approval is None and four_eyes_required(saga, action):
                refusal = approval_pending_refusal(saga=saga, action=action)
                if refusal is None:
                    requested = approval_request_create(
                        saga=saga,
                        action=action,
                        actor=actor,
                        actor_name=actor_name,
                        reason=reason,
                        evidence=evidence,
                        position=saga_position(saga),
                    )
            if refusal is not None:
                audit_refusal(actor=actor, action=action, saga_id=saga.id, reason=reason, outcome=f"refused: {refusal}")
                logger.info("operator action refused", extra={"refusal": refusal})
            elif requested is None:
                before = f"{saga.state} at {saga.current_step or '-'}/{saga.phase} attempt {saga.attempt}"
                # Written before the transition, so that the timeline lists the action before
                # the attempt it sends (both take the database's time of their statement).
                SagaEvent.objects.create(
                    saga=saga,
                    kind=f"operator_{action}",
                    detail=f"{actor_name} ({before}): {reason}" + (f" — evidence: {evidence}" if evidence else ""),
                )
                # A record by hand approved by a second operator names both in the participant's books.
                performer = actor_name
                if approval is not None:
                    performer = f"{approval.requested_by_name} (approved by {actor_name})"[:150]
                outcome = perform(saga, definition, actor_name=performer, reason=reason, evidence=evidence)
                if approval is not None:
                    by = approval.requested_by_name
                    outcome += f" (four eyes: request #{approval.pk} by {by}, approved by {actor_name})"
                saga.updated_at = timezone.now()
                saga_save(saga)
                audit_record(actor=actor, action=action, saga_id=saga.id, reason=reason, outcome=outcome)
                logger.info("operator action", extra={"outcome": outcome})
    finally:
        reset_context(token)
    if refusal is not None:
        raise SagaActionRefused(refusal)
    if requested is not None:
        raise ApprovalRequested(requested)
    return saga


def _approved_position_refusal(saga: SagaInstance, approval: ApprovalRequest) -> str | None:
    """An approval applies to the step and phase the requester saw; a resend since (a new
    attempt of the same step) does not change what is approved, a move to another step does."""
    requested_at = approval.position.rsplit("/", 1)[0]
    if requested_at != f"{saga.current_step}/{saga.phase}":
        return (
            f"the saga moved on since request #{approval.pk} was made: it is now {saga.state} at"
            f" {saga.current_step or '-'} ({saga.phase}); ask for the action again if it is still needed"
        )
    return None


def _refusal(
    saga: SagaInstance,
    definition: SagaDefinition,
    action: str,
    *,
    reason: str,
    evidence: str,
    expected_position: str | None,
) -> str | None:
    if (refusal := _text_refusal(reason=reason, evidence=evidence)) is not None:
        return refusal
    if action == SagaAction.MARK_STEP_DONE and not evidence:
        return "evidence is required: say what was done by hand and where it can be checked"
    if expected_position is not None and expected_position != saga_position(saga):
        # The operator decided on a page that no longer shows the truth; acting now could
        # e.g. mark done a step nobody looked at.
        return (
            f"the saga moved on since the page was loaded: it is now {saga.state} at "
            f"{saga.current_step or '-'} ({saga.phase}); reload the page and decide again"
        )
    return saga_action_refusal(saga=saga, action=action, definition=definition)


def _text_refusal(*, reason: str, evidence: str = "") -> str | None:
    if not reason:
        return "a reason is required"
    if len(reason) > OPERATOR_TEXT_MAX or len(evidence) > OPERATOR_TEXT_MAX:
        return f"a reason and evidence are at most {OPERATOR_TEXT_MAX} characters each"
    return None


def _actor_name(actor: Actor) -> str:
    return actor.get_username() if actor is not None and getattr(actor, "is_authenticated", False) else "system"


def saga_of(correlation_id: str) -> uuid.UUID | None:
    """The saga a correlation id (or a saga id sent in a form) names, if it exists: what an
    audit row about a message or a selection links to."""
    try:
        saga_id = uuid.UUID(str(correlation_id))
    except ValueError:
        return None
    return saga_id if SagaInstance.objects.filter(pk=saga_id).exists() else None
