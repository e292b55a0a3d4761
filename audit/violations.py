"""A violation's lifecycle with the operators: acknowledged with a note ("I am on it"), then
resolved with a reason once its cause is repaired.

A resolution is not taken on the operator's word: the auditor's own checks run again, on the
violation's objects, in one snapshot, and a violation still found is refused with what is
still wrong. If the corruption comes back later, the next audit run reopens the same row
(audit.services' upsert), unacknowledged, counting the reopening.
"""

from collections.abc import Callable
from dataclasses import dataclass

from django.db import connection, transaction
from django.utils import timezone

from audit.checks import CHECKS, Finding, Scope
from audit.exceptions import ViolationActionRefused
from audit.models import AuditRun, Violation
from audit.services import violation_objects


@dataclass(frozen=True)
class Recheck:
    still_found: Finding | None


# Called with the violation inside the transaction that changes it: the caller's audit row
# commits with the change, or neither does.
OnChange = Callable[[Violation], None]


def violation_acknowledge(*, violation_id: int, by: str, note: str, on_change: OnChange | None = None) -> Violation:
    note = note.strip()
    if not note:
        raise ViolationActionRefused("a note is required: say who is looking into it and how")
    with transaction.atomic():
        violation = _locked(violation_id)
        if not violation.is_open:
            raise ViolationActionRefused("it is already resolved")
        violation.acknowledged_at = timezone.now()
        violation.acknowledged_by = by
        violation.acknowledgement_note = note
        violation.save(update_fields=["acknowledged_at", "acknowledged_by", "acknowledgement_note"])
        if on_change is not None:
            on_change(violation)
    return violation


def violation_resolve(*, violation_id: int, by: str, reason: str, on_change: OnChange | None = None) -> Violation:
    """Close an open violation after the auditor's checks no longer find it; raises
    ViolationActionRefused with what is still wrong otherwise."""
    reason = reason.strip()
    if not reason:
        raise ViolationActionRefused("a reason is required: say what was repaired")
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if outermost:  # every check reads the same moment, as in an audit run
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        violation = _locked(violation_id)
        if not violation.is_open:
            raise ViolationActionRefused("it is already resolved")
        found = violation_recheck(violation).still_found
        if found is None:
            violation.resolved_at = timezone.now()
            violation.resolved_by = by
            violation.resolution_reason = reason
            violation.save(update_fields=["resolved_at", "resolved_by", "resolution_reason"])
            if on_change is not None:
                on_change(violation)
            return violation
        violation.detail, violation.last_seen = found.detail, timezone.now()
        violation.save(update_fields=["detail", "last_seen"])
    raise ViolationActionRefused(f"the auditor's check still finds it: {found.detail}")


def violation_recheck(violation: Violation) -> Recheck:
    """Run every check on this violation's objects only, and say whether it is still there."""
    objects = violation_objects([violation.involved if isinstance(violation.involved, dict) else {}])
    what, _, ident = violation.key.partition(":")
    if what == "order" and ident.isdigit():
        objects["order"].add(int(ident))
    elif what == "saga" and ident:
        objects["saga"].add(ident)
    previous = AuditRun.objects.order_by("-started_at").first()
    scope = Scope(
        now=timezone.now(),
        order_ids=sorted(objects["order"]),
        saga_ids=sorted(objects["saga"]),
        gateway_charge_ids=sorted(objects["gateway_charge"]),
        carrier_shipment_ids=sorted(objects["carrier_shipment"]),
        # Stock is checked from the checkpoint the last run left (StockCheckpoint's sums).
        stock_checkpoint=previous.watermark.get("stock_checkpoint") if previous is not None else None,
    )
    for check in CHECKS:
        for finding in check(scope):
            if (finding.kind, finding.key) == (violation.kind, violation.key):
                return Recheck(still_found=finding)
    return Recheck(still_found=None)


def _locked(violation_id: int) -> Violation:
    try:
        return Violation.objects.select_for_update().get(pk=violation_id)
    except Violation.DoesNotExist:
        raise ViolationActionRefused(f"no violation {violation_id}") from None
