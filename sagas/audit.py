"""The operators' audit log: every action, who did it, why and what came of it."""

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from sagas.models import AuditLog


def audit_record(
    *,
    actor: AbstractBaseUser | AnonymousUser | None,
    action: str,
    saga_id: object | None,
    reason: str,
    outcome: str,
    target: str = "",
) -> AuditLog:
    user = actor if getattr(actor, "is_authenticated", False) else None
    return AuditLog.objects.create(
        actor=user,
        actor_name=user.get_username() if user is not None else "system",
        action=action,
        saga_id=saga_id,
        target=target,
        reason=reason,
        outcome=outcome,
    )
