"""The engine's own transitions of a saga, as public services: retry the current step,
compensate, retry a failed compensation, send a step done by hand; which of them a saga's
state allows; where a saga stands.

Each transition expects the saga row locked (``sagas.locks.lock_saga``) inside the caller's
transaction, so it serialises with the orchestrator applying a reply and with the sweeper. The
transitions reuse the orchestrator's own functions, so a step sent again is the same command,
with the same idempotency key, as one the engine would send. Who may ask for them, why, and
the record of who did is the console's (console/operations.py).
"""

from enum import StrEnum

from outbox.selectors import dead_letter_exists
from sagas.definition import SagaDefinition, StepKind, definition_for
from sagas.models import Outcome, Phase, SagaInstance, SagaState, SagaStep
from sagas.orchestrator import _begin_compensation, _send, saga_revive_failed


class SagaAction(StrEnum):
    RETRY_STEP = "retry_step"
    COMPENSATE = "compensate"
    RETRY_COMPENSATION = "retry_compensation"
    MARK_STEP_DONE = "mark_step_done"


# What an operator cancelling a saga tells the customer (it ends up in the cancellation
# email); the operator's own reason stays in the audit log, which customers never see.
OPERATOR_CANCEL_REASON = "cancelled by an operator"


def saga_action_refusal(*, saga: SagaInstance, action: str, definition: SagaDefinition | None = None) -> str | None:
    """Why ``action`` cannot run on ``saga`` in its current state, or None when it can."""
    state = saga.state
    if action == SagaAction.RETRY_STEP:
        if state == SagaState.FAILED:
            return "the saga's compensation failed: use 'retry compensation' to run it again"
        if state not in (SagaState.RUNNING, SagaState.COMPENSATING):
            return f"the saga is {state}; only a running or compensating saga has a step to retry"
        return None
    if action == SagaAction.COMPENSATE:
        if state == SagaState.COMPENSATING:
            return "the saga is already compensating"
        if state == SagaState.FAILED:
            return "the saga's compensation failed: use 'retry compensation' or mark the compensation done"
        if state != SagaState.RUNNING:
            return f"the saga is {state}; there is nothing left to compensate"
        definition = definition or definition_for(saga.definition_name, saga.definition_version)
        step = definition.step(saga.current_step)
        if step.kind != StepKind.COMPENSATABLE:
            # The same rule as a customer's cancellation: past the pivot the saga only goes forward.
            return (
                f"the saga is past its pivot (at {step.name}, a {step.kind} step); it can only go forward: "
                "retry the step or mark it done"
            )
        if saga.cancel_requested and not saga.stuck:
            return "compensation was already requested; it starts when the step in flight answers"
        return None
    if action == SagaAction.RETRY_COMPENSATION:
        if state != SagaState.FAILED:
            return f"the saga is {state}; only a saga whose compensation failed can retry it"
        return None
    if action == SagaAction.MARK_STEP_DONE:
        if state not in (SagaState.RUNNING, SagaState.COMPENSATING, SagaState.FAILED) or not saga.current_step:
            return f"the saga is {state}; it has no step waiting to be done"
        return None
    raise ValueError(f"unknown saga action {action!r}")


def saga_actions_available(*, saga: SagaInstance) -> list[str]:
    """The actions valid in the saga's state, in the order the console shows them."""
    definition = definition_for(saga.definition_name, saga.definition_version)
    return [
        action for action in SagaAction if saga_action_refusal(saga=saga, action=action, definition=definition) is None
    ]


def saga_position(saga: SagaInstance) -> str:
    """What an action form carries to detect that the saga moved on: its step, phase and
    attempt (a record by hand or a resend sent since the page was loaded is a move too)."""
    return f"{saga.current_step}/{saga.phase}/{saga.attempt}"


def _clear_stuck(saga: SagaInstance) -> None:
    saga.stuck, saga.stuck_reason, saga.stuck_since = False, "", None


def transition_retry_step(saga: SagaInstance, definition: SagaDefinition, **_: str) -> str:
    _clear_stuck(saga)
    _send(saga, definition, new_step=True)
    return f"sent {saga.current_step} ({saga.phase}) attempt {saga.attempt} with key {saga.step_key(saga.current_step)}"


def transition_compensate(saga: SagaInstance, definition: SagaDefinition, **_: str) -> str:
    in_flight = not saga.stuck
    if in_flight:
        saga.cancel_requested = True
        saga.failure_reason = saga.failure_reason or OPERATOR_CANCEL_REASON
        return f"cancel requested: the saga compensates when {saga.current_step} attempt {saga.attempt} answers"
    current = saga.current_step
    # Nothing answered and nothing will: the step may or may not have taken effect, so it is
    # compensated with the others (its compensation copes with nothing to undo).
    SagaStep.objects.filter(saga=saga, phase=Phase.FORWARD, outcome=Outcome.PENDING).update(outcome=Outcome.SUPERSEDED)
    if current not in saga.completed_steps:
        saga.completed_steps = [*saga.completed_steps, current]
    _begin_compensation(saga, definition, reason=OPERATOR_CANCEL_REASON)
    if saga.state == SagaState.COMPENSATED:
        return "compensated: nothing to undo"
    return f"compensating from {current}: sent {saga.current_step} compensation attempt {saga.attempt}"


def transition_retry_compensation(saga: SagaInstance, definition: SagaDefinition, **_: str) -> str:
    saga_revive_failed(saga)
    _clear_stuck(saga)
    _send(saga, definition, new_step=True)
    return f"compensating again: sent {saga.current_step} compensation attempt {saga.attempt}"


def transition_mark_step_done(
    saga: SagaInstance, definition: SagaDefinition, *, actor_name: str, reason: str, evidence: str
) -> str:
    """Send the operator's record to the participant as a copy of the step, under its key.

    The participant decides it under the lock on that key, like any copy: recorded first, it is
    final and a late or replayed copy then does nothing; if an automatic copy decided first,
    the participant answers with that outcome and the saga follows it. The saga moves on when
    the answer comes, which the record's delivery in this process brings within moments.
    """
    step = definition.step(saga.current_step)
    if saga.state == SagaState.FAILED:
        saga_revive_failed(saga)
    phase = saga.phase
    _clear_stuck(saga)
    _send(saga, definition, new_step=True, manual={"by": actor_name, "reason": reason, "evidence": evidence})
    return (
        f"{step.name} ({phase}) sent to its participant as done by hand, attempt {saga.attempt} under key"
        f" {saga.step_key(step.name, phase)}; the saga goes on when the participant records it"
    )


def attempt_fate(saga: SagaInstance) -> tuple[SagaStep | None, str]:
    """The current step's last attempt and what became of it: ``answered``, ``dead_lettered``
    (its command gave up; a replay would run it again) or ``in_flight`` (neither: it may still
    take effect, whatever the stuck flag says)."""
    if not saga.current_step:
        return None, "none"
    attempt = SagaStep.objects.filter(saga=saga, step=saga.current_step, phase=saga.phase).order_by("-attempt").first()
    if attempt is None:
        return None, "none"
    if attempt.command_message_id and dead_letter_exists(message_id=str(attempt.command_message_id)):
        return attempt, "dead_lettered"
    if attempt.reply is not None:
        return attempt, "answered"
    return attempt, "in_flight"
