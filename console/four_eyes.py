"""Four eyes on money: which operator actions move money, and the pending request that such an
action becomes until a second operator approves it.

A charge marked done by hand, a refund marked done by hand, a compensation that will refund and
a retried refund each move (or record) money on an operator's word alone. One operator's slip or
bad faith should not be enough: the action is kept as a request, shown on the "needs attention"
view, and runs only when another operator approves it (console/approvals.py). Small teams turn
it off with FOUR_EYES_ENABLED; FOUR_EYES_MIN_AMOUNT leaves small orders to one operator.
"""

from __future__ import annotations

from django.conf import settings

from console.audit import audit_record
from console.models import ApprovalRequest
from sagas.definition import SagaDefinition
from sagas.exceptions import SagaActionRefused
from sagas.models import Phase, SagaInstance
from sagas.transitions import SagaAction

REQUEST_APPROVAL = "request_approval"


class ApprovalRequested(SagaActionRefused):
    """The action was not run: it waits as a pending request for a second operator. A refusal
    to the caller that expected it done (a bulk repair counts it as not done, with why)."""

    def __init__(self, request: ApprovalRequest) -> None:
        self.request = request
        super().__init__(
            f"moves money, so it needs a second operator's approval: request #{request.pk} is pending"
            " on the Needs attention page"
        )


def money_of(saga: SagaInstance) -> tuple[int | None, str]:
    """The amount at stake in the saga (its data's ``amount``, minor units) and its currency."""
    data = saga.data if isinstance(saga.data, dict) else {}
    amount = data.get("amount")
    return (amount if isinstance(amount, int) else None), str(data.get("currency", ""))


def moves_money(saga: SagaInstance, action: str, definition: SagaDefinition | None = None) -> bool:
    """Whether ``action`` on the saga as it is now moves money: a money step marked done by hand
    (either phase), its compensation retried, or a compensation whose chain refunds."""
    steps = set(settings.FOUR_EYES_STEPS)
    step = saga.current_step
    if action == SagaAction.MARK_STEP_DONE:
        return step in steps
    if action in (SagaAction.RETRY_STEP, SagaAction.RETRY_COMPENSATION):
        phase = Phase.COMPENSATION if action == SagaAction.RETRY_COMPENSATION else saga.phase
        return step in steps and phase == Phase.COMPENSATION
    if action == SagaAction.COMPENSATE:
        return bool(steps & {*saga.completed_steps, step})
    return False


def four_eyes_required(saga: SagaInstance, action: str) -> bool:
    if not settings.FOUR_EYES_ENABLED or not moves_money(saga, action):
        return False
    amount, _ = money_of(saga)
    # An amount the saga does not know is not a small one.
    return amount is None or amount >= settings.FOUR_EYES_MIN_AMOUNT


def approval_pending_refusal(*, saga: SagaInstance, action: str) -> str | None:
    """A second request for an action that already waits would let two approvals run it twice."""
    pending = ApprovalRequest.objects.filter(saga=saga, action=action, status=ApprovalRequest.Status.PENDING).first()
    if pending is None:
        return None
    return f"request #{pending.pk} by {pending.requested_by_name} for this action is already waiting for approval"


def approval_request_create(
    *, saga: SagaInstance, action: str, actor, actor_name: str, reason: str, evidence: str, position: str
) -> ApprovalRequest:
    """Keep the action as a pending request, audited; called with the saga row locked, after
    the action was found allowed, in the transaction of the audit row."""
    amount, currency = money_of(saga)
    request = ApprovalRequest.objects.create(
        action=action,
        saga=saga,
        requested_by=actor if getattr(actor, "is_authenticated", False) else None,
        requested_by_name=actor_name,
        reason=reason,
        evidence=evidence,
        position=position,
        amount=amount,
        currency=currency,
    )
    audit_record(
        actor=actor,
        action=REQUEST_APPROVAL,
        saga_id=saga.pk,
        target=f"approval:{request.pk}",
        reason=reason,
        outcome=(
            f"awaiting a second operator's approval: {action} at {saga.current_step} ({saga.phase}),"
            f" amount {amount if amount is not None else '?'} {currency} (minor units)"
            + (f" — evidence: {evidence}" if evidence else "")
        ),
    )
    return request
