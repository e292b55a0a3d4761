"""The operators' audit log: every action, who did it, why and what came of it."""

import logging
import time

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.cache import cache

from console.models import AuditLog

logger = logging.getLogger(__name__)

# What an operator writes (a reason, evidence) is kept whole up to this length: the forms and
# the services refuse more, and a refusal keeps only this much of what it was sent.
OPERATOR_TEXT_MAX = 2000
# Refused actions written per operator per minute. The log is append-only, and a refused
# action costs its sender nothing: past this, refusals are logged, not kept.
REFUSALS_PER_MINUTE = 30


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


def audit_refusal(
    *,
    actor: AbstractBaseUser | AnonymousUser | None,
    action: str,
    saga_id: object | None,
    reason: str,
    outcome: str,
    target: str = "",
) -> AuditLog | None:
    """Record a refused action, its text cut to OPERATOR_TEXT_MAX, unless the operator has had
    REFUSALS_PER_MINUTE refusals recorded this minute. Only for an actor already known to be
    staff allowed to view what they acted on: anyone else is turned away unrecorded."""
    if _over_refusal_budget(actor):
        logger.warning("refused operator action not audited: too many this minute", extra={"action": action})
        return None
    return audit_record(
        actor=actor,
        action=action,
        saga_id=saga_id,
        target=target,
        reason=reason[:OPERATOR_TEXT_MAX],
        outcome=outcome[:OPERATOR_TEXT_MAX],
    )


def _over_refusal_budget(actor: object) -> bool:
    key = f"audit-refusals:{getattr(actor, 'pk', None)}:{int(time.time() // 60)}"
    try:
        cache.add(key, 0, timeout=120)
        return cache.incr(key) > REFUSALS_PER_MINUTE
    except Exception:  # noqa: BLE001 - without the counter, record: each row is bounded anyway
        return False
