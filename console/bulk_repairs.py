"""Bulk repairs an operator can trust: a frozen selection, a canary, a rate, and every saga's outcome.

When the operator confirms, the exact sagas are written down (one item each): a saga that
joins the filter afterwards is not swept in. One saga, the canary, is repaired first and the
rest waits until its outcome is known: it reached a terminal state or moved past the step
(done), or it was flagged again (failed again). A canary that fails again stops the repair and
the rest is not run: the cause (a carrier still down) is not gone, and retrying five hundred
sagas into it would only burn their attempts. After a good canary the rest is sent no faster
than the repair's rate, each through the same operator service as a single action
(console.operations: the saga locked, its state checked, an audit row per saga in the
requester's name). Beat advances every unfinished repair each second
(:func:`bulk_repairs_advance`), outside any web request; a repair's row lock makes two beats,
or a beat and a test, advance it one at a time.
"""

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import DatabaseError, transaction
from django.db.models import Q
from django.utils import timezone

from console import operations
from console.audit import audit_record
from console.models import BulkRepair, BulkRepairItem
from sagas.exceptions import SagaActionRefused
from sagas.models import SagaInstance, SagaState

logger = logging.getLogger(__name__)

# The actions a bulk repair may run; marking a step done needs evidence per saga, so it is never bulk.
BULK_SERVICES: dict[str, Callable[..., SagaInstance]] = {
    operations.SagaAction.RETRY_STEP: operations.saga_retry_step,
    operations.SagaAction.COMPENSATE: operations.saga_compensate,
    operations.SagaAction.RETRY_COMPENSATION: operations.saga_retry_compensation,
}
ACTIVE = (BulkRepair.Status.CANARY, BulkRepair.Status.RUNNING)
FINISHED_ITEMS = (
    BulkRepairItem.Status.DONE,
    BulkRepairItem.Status.FAILED_AGAIN,
    BulkRepairItem.Status.REFUSED,
    BulkRepairItem.Status.NOT_RUN,
)
# How long one beat run may keep sending at a rate faster than one saga a second.
ADVANCE_BUDGET_SECONDS = 0.9


def bulk_repair_create(
    *, actor: AbstractBaseUser, action: str, reason: str, saga_ids: Sequence[object], rate_per_minute: int | None = None
) -> BulkRepair:
    """Freeze the selection: one item per saga, in the order given, and audit the request."""
    if action not in BULK_SERVICES:
        raise ValueError(f"{action!r} cannot be run in bulk")
    rate = rate_per_minute or settings.CONSOLE_BULK_REPAIR_RATE_PER_MINUTE
    with transaction.atomic():
        repair = BulkRepair.objects.create(
            requester=actor,
            requester_name=actor.get_username(),
            action=action,
            reason=reason.strip(),
            rate_per_minute=rate,
        )
        BulkRepairItem.objects.bulk_create(
            BulkRepairItem(repair=repair, saga_id=saga_id, position=position)
            for position, saga_id in enumerate(dict.fromkeys(saga_ids))
        )
        count = repair.items.count()
        audit_record(
            actor=actor,
            action=f"bulk_{action}",
            saga_id=None,
            target=f"bulk repair {repair.pk}",
            reason=repair.reason,
            outcome=f"{count} saga(s) frozen; a canary first, then at most {rate} a minute",
        )
    return repair


def bulk_repairs_advance() -> dict[str, int]:
    """Beat's job: advance every unfinished repair, for up to ADVANCE_BUDGET_SECONDS when one
    runs faster than a saga a second (each step in its own transaction, so the commands
    already sent leave at once)."""
    deadline = time.monotonic() + ADVANCE_BUDGET_SECONDS
    advanced = 0
    while True:
        ids = list(
            BulkRepair.objects.filter(Q(status__in=ACTIVE) | Q(items__status=BulkRepairItem.Status.SENT))
            .distinct()
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        for repair_id in ids:
            bulk_repair_advance(repair_id=repair_id)
            advanced += 1
        due = (
            BulkRepair.objects.filter(status=BulkRepair.Status.RUNNING, next_send_at__isnull=False)
            .order_by("next_send_at")
            .values_list("next_send_at", flat=True)
            .first()
        )
        wait = (due - timezone.now()).total_seconds() if due is not None else None
        if wait is None or time.monotonic() + max(wait, 0) >= deadline:
            return {"repairs": len(ids), "advanced": advanced}
        time.sleep(max(wait, 0))


def bulk_repair_advance(*, repair_id: int) -> BulkRepair | None:
    """One step of one repair: judge the sagas sent, then send the canary, decide on it, or
    send the next saga when the rate allows. A stopped repair still follows the sagas it had
    sent. None when another process holds the repair."""
    with transaction.atomic():
        repair = BulkRepair.objects.select_for_update(skip_locked=True).filter(pk=repair_id).first()
        if repair is None:
            return None
        # Each saga as it is now, read once per step: what the sagas sent have become.
        items = list(repair.items.select_related("saga").order_by("position"))
        for item in items:
            if item.status == BulkRepairItem.Status.SENT:
                _judge(repair, item)
        if repair.status not in ACTIVE:
            return repair
        if (refusal := _requester_refusal(repair)) is not None:
            # The requester lost the right since confirming: nothing more is sent in their name.
            for item in items:
                if item.status == BulkRepairItem.Status.WAITING:
                    _close(item, BulkRepairItem.Status.NOT_RUN, f"not run: {refusal}")
            _stop(repair, f"stopped: {refusal}")
        if repair.status == BulkRepair.Status.CANARY:
            _advance_canary(repair, items)
        if repair.status == BulkRepair.Status.RUNNING:
            _advance_rest(repair, items)
        if repair.status in ACTIVE and all(item.status in FINISHED_ITEMS for item in items):
            _finish(repair, items)
        repair.save()
    return repair


def bulk_repair_stop(*, repair_id: int, actor: AbstractBaseUser, reason: str) -> BulkRepair:
    """The operator stops a repair: the sagas not sent yet are not run; those sent are still
    followed to their outcome. Audited; refused (SagaActionRefused) once it has ended."""
    reason = reason.strip()
    with transaction.atomic():
        # Waits for a beat step in progress, so that nothing is sent after the stop.
        repair = BulkRepair.objects.select_for_update().get(pk=repair_id)
        if not reason:
            raise SagaActionRefused("a reason is required")
        if repair.status not in ACTIVE:
            raise SagaActionRefused(f"the bulk repair has ended already ({repair.get_status_display()})")
        waiting = repair.items.filter(status=BulkRepairItem.Status.WAITING)
        count = waiting.update(
            status=BulkRepairItem.Status.NOT_RUN,
            outcome=f"not run: stopped by {actor.get_username()}",
            finished_at=timezone.now(),
        )
        repair.status, repair.finished_at = BulkRepair.Status.STOPPED, timezone.now()
        repair.status_detail = f"stopped by {actor.get_username()}: {reason}; {count} saga(s) not run"
        repair.save()
        audit_record(
            actor=actor,
            action=f"bulk_{repair.action}",
            saga_id=None,
            target=f"bulk repair {repair.pk}",
            reason=reason,
            outcome=repair.status_detail,
        )
    return repair


def _requester_refusal(repair: BulkRepair) -> str | None:
    permission = operations.ACTION_PERMISSIONS[repair.action]
    if repair.requester.is_active and repair.requester.has_perm(permission):
        return None
    return f"{repair.requester_name} no longer has the permission {permission}"


def _advance_canary(repair: BulkRepair, items: list[BulkRepairItem]) -> None:
    canary = next((item for item in items if item.saga_id == repair.canary_id), None)
    # A refused canary says nothing of the repair: the next saga becomes the canary.
    while canary is None or canary.status == BulkRepairItem.Status.REFUSED:
        canary = next((item for item in items if item.status == BulkRepairItem.Status.WAITING), None)
        if canary is None:
            return  # every saga was refused: _finish says so
        repair.canary_id = canary.saga_id
        _send(repair, canary)
    if canary.status == BulkRepairItem.Status.DONE:
        repair.status = BulkRepair.Status.RUNNING
        repair.status_detail = f"the canary {_short(canary)} succeeded ({canary.outcome}); the rest follows"
        repair.next_send_at = timezone.now()
    elif canary.status == BulkRepairItem.Status.FAILED_AGAIN:
        rest = [item for item in items if item.status == BulkRepairItem.Status.WAITING]
        for item in rest:
            _close(item, BulkRepairItem.Status.NOT_RUN, "not run: the canary failed again")
        _stop(
            repair,
            f"stopped: the canary {_short(canary)} failed again ({canary.outcome}); the other {len(rest)} saga(s)"
            " were not run. Repair the cause, then select them again.",
        )


def _advance_rest(repair: BulkRepair, items: list[BulkRepairItem]) -> None:
    now = timezone.now()
    if repair.next_send_at is not None and now < repair.next_send_at:
        return
    item = next((item for item in items if item.status == BulkRepairItem.Status.WAITING), None)
    if item is None:
        repair.next_send_at = None  # all sent: beat has nothing to wait for
        return
    _send(repair, item)
    # Spaced from this send, never from a schedule that fell behind: a beat that was down
    # does not make up for lost time in a burst.
    repair.next_send_at = timezone.now() + timedelta(seconds=60 / repair.rate_per_minute)


def _send(repair: BulkRepair, item: BulkRepairItem) -> None:
    """Run the action on one saga through the operator service, as the requester."""
    service = BULK_SERVICES[repair.action]
    try:
        saga = service(
            saga_id=item.saga_id, actor=repair.requester, reason=f"{repair.reason} [bulk repair {repair.pk}]"
        )
    except SagaActionRefused as exc:
        _close(item, BulkRepairItem.Status.REFUSED, f"refused: {exc}")
        return
    except DatabaseError as exc:  # rolled back to the service's savepoint; the repair goes on
        logger.exception("bulk repair: saga action failed", extra={"saga_id": str(item.saga_id)})
        _close(item, BulkRepairItem.Status.REFUSED, f"refused: the action failed ({exc.__class__.__name__})")
        return
    item.status = BulkRepairItem.Status.SENT
    item.sent_step, item.sent_phase, item.sent_attempt = saga.current_step or "", saga.phase, saga.attempt
    item.sent_at = timezone.now()
    item.outcome = f"sent: {saga.current_step or '-'} ({saga.phase}) attempt {saga.attempt}"
    item.save(update_fields=["status", "sent_step", "sent_phase", "sent_attempt", "sent_at", "outcome"])
    item.saga = saga
    _judge(repair, item)  # e.g. compensated at once, with nothing to undo


def _judge(repair: BulkRepair, item: BulkRepairItem) -> None:
    verdict = item_outcome(action=repair.action, saga=item.saga, sent_step=item.sent_step, sent_phase=item.sent_phase)
    if verdict is not None:
        _close(item, *verdict)


def item_outcome(*, action: str, saga: SagaInstance, sent_step: str, sent_phase: str) -> tuple[str, str] | None:
    """What became of a saga an action was sent to: (status, words), or None while unknown."""
    if saga.state == SagaState.COMPLETED:
        if action == operations.SagaAction.COMPENSATE:
            # The step in flight answered and took the saga past its pivot before the cancel.
            return BulkRepairItem.Status.FAILED_AGAIN, "not compensated: the saga completed"
        return BulkRepairItem.Status.DONE, "done: the saga completed"
    if saga.state == SagaState.COMPENSATED:
        return BulkRepairItem.Status.DONE, "done: the saga is compensated"
    if saga.state == SagaState.FAILED:
        return BulkRepairItem.Status.FAILED_AGAIN, f"failed again: {saga.failure_reason or 'compensation failed'}"
    moved = (saga.current_step, saga.phase) != (sent_step, sent_phase)
    if moved and action != operations.SagaAction.COMPENSATE:
        return BulkRepairItem.Status.DONE, f"done: moved past {sent_step} to {saga.current_step} ({saga.phase})"
    if saga.stuck:
        return BulkRepairItem.Status.FAILED_AGAIN, f"failed again: stuck at {saga.current_step}: {saga.stuck_reason}"
    return None


def _close(item: BulkRepairItem, status: str, outcome: str) -> None:
    item.status, item.outcome, item.finished_at = status, outcome, timezone.now()
    item.save(update_fields=["status", "outcome", "finished_at"])


def _stop(repair: BulkRepair, detail: str) -> None:
    repair.status, repair.status_detail, repair.finished_at = BulkRepair.Status.STOPPED, detail, timezone.now()
    audit_record(
        actor=repair.requester,
        action=f"bulk_{repair.action}",
        saga_id=repair.canary_id,
        target=f"bulk repair {repair.pk}",
        reason=repair.reason,
        outcome=detail,
    )


def _finish(repair: BulkRepair, items: list[BulkRepairItem]) -> None:
    counts = Counter(item.status for item in items)
    repair.status, repair.finished_at = BulkRepair.Status.DONE, timezone.now()
    repair.status_detail = "finished: " + ", ".join(
        f"{counts[status]} {BulkRepairItem.Status(status).label}" for status in FINISHED_ITEMS if counts[status]
    )


def _short(item: BulkRepairItem) -> str:
    return f"saga {str(item.saga_id)[:8]}"


# ---------------------------------------------------------------------------
# The progress page's read.
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BulkRepairProgress:
    repair: BulkRepair
    items: list[BulkRepairItem]
    counts: dict[str, int]
    finished: bool


def bulk_repair_progress(*, repair_id: int) -> BulkRepairProgress:
    repair = BulkRepair.objects.get(pk=repair_id)
    items = list(repair.items.select_related("saga").order_by("position"))
    counts = Counter(item.status for item in items)
    return BulkRepairProgress(
        repair=repair,
        items=items,
        # Only what occurs, in the order a saga goes through them.
        counts={status.label: counts[status.value] for status in BulkRepairItem.Status if counts[status.value]},
        finished=repair.status not in ACTIVE and not counts[BulkRepairItem.Status.SENT],
    )
