"""Deciding a four-eyes request (console/four_eyes.py): a second operator approves it, which
runs the action once, or rejects it with a reason. Every decision, and every refused one, is in
the audit log.

The request row is locked for the decision: two operators approving at the same moment are
serialised on it, the first runs the action and marks it executed, the second finds it decided
and is refused. The action itself runs through the same service as any operator action, with
the saga locked and its state checked again: approved an hour later, it applies only if the
saga still waits at the step the requester saw.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from console import operations
from console.audit import OPERATOR_TEXT_MAX, audit_record, audit_refusal
from console.models import ApprovalRequest
from sagas.exceptions import SagaActionRefused
from sagas.transitions import SagaAction

APPROVE_REQUEST = "approve_request"
REJECT_REQUEST = "reject_request"

SERVICES: dict[str, Callable[..., object]] = {
    SagaAction.RETRY_STEP: operations.saga_retry_step,
    SagaAction.COMPENSATE: operations.saga_compensate,
    SagaAction.RETRY_COMPENSATION: operations.saga_retry_compensation,
    SagaAction.MARK_STEP_DONE: operations.saga_mark_step_done,
}

Status = ApprovalRequest.Status


def approvals_pending() -> QuerySet[ApprovalRequest]:
    """The requests waiting for a second operator, oldest first (for "needs attention")."""
    return ApprovalRequest.objects.filter(status=Status.PENDING).select_related("saga").order_by("created_at")


def approval_approve(*, request_id: int, actor, note: str = "") -> ApprovalRequest:
    """Approve and run the request once; raise SagaActionRefused (audited) when this operator
    may not, the request is no longer pending, or the saga no longer allows the action."""
    note = note.strip()[:OPERATOR_TEXT_MAX]
    with transaction.atomic():
        request = _lock(request_id)
        refusal = _decision_refusal(request, actor, approving=True)
        if refusal is not None:
            _audit_refused(request, actor, APPROVE_REQUEST, note, refusal)
        else:
            audit_record(
                actor=actor,
                action=APPROVE_REQUEST,
                saga_id=request.saga_id,
                target=f"approval:{request.pk}",
                reason=note or request.reason,
                outcome=f"approved {request.action} requested by {request.requested_by_name}; running it now",
            )
            arguments = {"saga_id": request.saga_id, "actor": actor, "reason": request.reason, "approval": request}
            if request.action == SagaAction.MARK_STEP_DONE:
                arguments["evidence"] = request.evidence
            try:
                # A savepoint: a refusal of the action keeps its audit row and ours.
                SERVICES[request.action](**arguments)
            except SagaActionRefused as exc:
                request.status, request.result = Status.EXPIRED, f"not run: {exc}"
            else:
                request.status, request.result = Status.EXECUTED, "executed"
            _decide(request, actor, note)
            audit_record(
                actor=actor,
                action=APPROVE_REQUEST,
                saga_id=request.saga_id,
                target=f"approval:{request.pk}",
                reason=note or request.reason,
                outcome=f"request #{request.pk} {request.status}: {request.result}",
            )
    if refusal is not None:
        raise SagaActionRefused(refusal)
    if request.status != Status.EXECUTED:
        raise SagaActionRefused(request.result)
    return request


def approval_reject(*, request_id: int, actor, reason: str) -> ApprovalRequest:
    """Reject the request with a reason (the requester may withdraw their own this way)."""
    reason = reason.strip()
    with transaction.atomic():
        request = _lock(request_id)
        refusal = _decision_refusal(request, actor, approving=False)
        if refusal is None and not reason:
            refusal = "a reason is required to reject a request"
        if refusal is None and len(reason) > OPERATOR_TEXT_MAX:
            refusal = f"a reason is at most {OPERATOR_TEXT_MAX} characters"
        if refusal is not None:
            _audit_refused(request, actor, REJECT_REQUEST, reason, refusal)
        else:
            request.status, request.result = Status.REJECTED, "rejected"
            _decide(request, actor, reason)
            audit_record(
                actor=actor,
                action=REJECT_REQUEST,
                saga_id=request.saga_id,
                target=f"approval:{request.pk}",
                reason=reason,
                outcome=f"rejected {request.action} requested by {request.requested_by_name}",
            )
    if refusal is not None:
        raise SagaActionRefused(refusal)
    return request


def _lock(request_id: int) -> ApprovalRequest:
    return ApprovalRequest.objects.select_for_update().get(pk=request_id)


def _decision_refusal(request: ApprovalRequest, actor, *, approving: bool) -> str | None:
    if request.status != Status.PENDING:
        decided = f" by {request.approver_name}" if request.approver_name else ""
        return f"request #{request.pk} was already {request.status}{decided}"
    permission = operations.ACTION_PERMISSIONS[request.action]
    if not actor.has_perm(permission):
        return f"permission denied (needs {permission})"
    if approving and request.requested_by_id is not None and request.requested_by_id == actor.pk:
        return "you asked for this action: another operator must approve it (four eyes)"
    if approving and request.created_at < timezone.now() - timedelta(hours=settings.FOUR_EYES_EXPIRY_HOURS):
        request.status, request.result = Status.EXPIRED, f"not decided within {settings.FOUR_EYES_EXPIRY_HOURS} h"
        request.save(update_fields=["status", "result"])
        return f"request #{request.pk} expired: {request.result}; ask for the action again if it is still needed"
    return None


def _decide(request: ApprovalRequest, actor, text: str) -> None:
    request.approver = actor
    request.approver_name = actor.get_username()
    request.decision_reason = text
    request.decided_at = timezone.now()
    request.save(update_fields=["status", "result", "approver", "approver_name", "decision_reason", "decided_at"])


def _audit_refused(request: ApprovalRequest, actor, action: str, text: str, refusal: str) -> None:
    audit_refusal(
        actor=actor,
        action=action,
        saga_id=request.saga_id,
        target=f"approval:{request.pk}",
        reason=text,
        outcome=f"refused: {refusal}",
    )
