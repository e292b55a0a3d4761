"""Operators acknowledge and resolve the auditor's violations: each attempt, done or refused,
is written to the console's audit log, naming the saga the violation is about."""

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from audit.exceptions import ViolationActionRefused
from audit.selectors import violation_get
from audit.violations import violation_acknowledge, violation_resolve
from console.audit import OPERATOR_TEXT_MAX, audit_record, audit_refusal
from console.operations import saga_of
from sagas.exceptions import SagaActionRefused
from sagas.models import SagaInstance

ACKNOWLEDGE_VIOLATION = "acknowledge_violation"
RESOLVE_VIOLATION = "resolve_violation"
VIOLATION_PERMISSIONS = {
    ACKNOWLEDGE_VIOLATION: "audit.acknowledge_violation",
    RESOLVE_VIOLATION: "audit.resolve_violation",
}
VIOLATION_LABELS = {ACKNOWLEDGE_VIOLATION: "Acknowledge", RESOLVE_VIOLATION: "Resolve"}

Actor = AbstractBaseUser | AnonymousUser | None


def saga_of_violation(violation: object) -> object | None:
    """The saga a violation is about: the one the auditor named, or its order's."""
    involved = getattr(violation, "involved", None) or {}
    if involved.get("saga"):
        return saga_of(str(involved["saga"]))
    target = getattr(violation, "console_target", "")
    if target.isdigit():
        return SagaInstance.objects.filter(aggregate="order", aggregate_id=target).values_list("pk", flat=True).first()
    return None


def violation_act_by_operator(*, action: str, violation_id: int, actor: Actor, text: str) -> object:
    """Acknowledge (``text`` is the note) or resolve (``text`` is the reason) and audit it;
    raises SagaActionRefused with the reason when refused (also audited)."""
    violation = violation_get(violation_id=violation_id)
    if violation is None:
        raise SagaActionRefused(f"no violation {violation_id}")
    saga_id = saga_of_violation(violation)
    target = f"violation:{violation_id}"
    name = actor.get_username() if getattr(actor, "is_authenticated", False) else "system"
    text = text.strip()
    refusal = f"at most {OPERATOR_TEXT_MAX} characters" if len(text) > OPERATOR_TEXT_MAX else None
    if refusal is None:

        def record(done: object) -> None:
            verb = "acknowledged" if action == ACKNOWLEDGE_VIOLATION else "resolved"
            outcome = f"{verb} {done.kind} {done.key}"
            if action == RESOLVE_VIOLATION:
                outcome += ": the auditor's check no longer finds it"
            audit_record(actor=actor, action=action, saga_id=saga_id, target=target, reason=text, outcome=outcome)

        service = violation_acknowledge if action == ACKNOWLEDGE_VIOLATION else violation_resolve
        text_name = "note" if action == ACKNOWLEDGE_VIOLATION else "reason"
        try:
            return service(violation_id=violation_id, by=name, on_change=record, **{text_name: text})
        except ViolationActionRefused as exc:
            refusal = str(exc)
    audit_refusal(
        actor=actor, action=action, saga_id=saga_id, target=target, reason=text, outcome=f"refused: {refusal}"
    )
    raise SagaActionRefused(refusal)
