"""The console's read model: the operators' dashboard and the saga page.

Every dashboard query is served by an index (see SagaInstance.Meta) and bounded by a time
window or a LIMIT, so the page costs the same with a hundred or a hundred thousand sagas.
The saga page reads across contexts (orders, payments, inventory, shipping), only through
their public selectors, and only by the order id or the idempotency keys the
saga derived, all of them indexed.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db.models import Count
from django.utils import timezone

from analytics.selectors import ConsumerLag, consumer_lag
from audit.selectors import open_violations
from common.heartbeat import Liveness, liveness
from console.models import AuditLog
from inventory.selectors import movements_of_reservations, reservations_of_order
from inventory.selectors import records_of_step_keys as stock_records_of_step_keys
from orders.selectors import order_with_lines_and_notices
from outbox.models import DeadLetter, InboxMessage, OutboxMessage
from outbox.selectors import Backlog, dead_letter_count, messages_of_correlation, outbox_backlog
from payments.selectors import ledger_of_order, payment_summary_of_order, payments_of_order
from payments.selectors import records_of_step_keys as payment_records_of_step_keys
from sagas.definition import SagaDefinition, definition_for
from sagas.messages import StepAddress, step_address_of
from sagas.models import SagaEvent, SagaInstance, SagaState, SagaStep
from sagas.selectors import (
    ACTIVE_STATES,
    KeyRecord,
    SagaPosition,
    StateCount,
    Throughput,
    saga_active_counts,
    saga_overdue_count,
    saga_positions,
    saga_state_counts,
    saga_throughput,
)
from shipping.selectors import records_of_step_keys as shipping_records_of_step_keys
from shipping.selectors import shipments_of_order

if TYPE_CHECKING:  # the rows the contexts' selectors hand over, named for the reader only
    from inventory.models import Reservation, StockMovement
    from orders.models import Order
    from payments.models import LedgerEntry, Payment
    from shipping.models import Shipment

# The columns the dashboard's lists show; loading only these keeps the rows small.
_LIST_FIELDS = (
    "id",
    "definition_name",
    "state",
    "aggregate",
    "aggregate_id",
    "current_step",
    "attempt",
    "stuck",
    "stuck_reason",
    "stuck_since",
    "failure_reason",
    "created_at",
    "finished_at",
    "step_deadline",
)


# ---------------------------------------------------------------------------
# The dashboard.
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Dashboard:
    generated_at: datetime
    state_counts: list[StateCount]
    active: dict[str, int]
    stuck: list[SagaInstance]
    stuck_count: int
    failed: list[SagaInstance]
    failed_count: int
    overdue_count: int
    backlog: Backlog
    dead_letters: list[DeadLetter]
    dead_letter_count: int
    throughput: Throughput
    violations: list[Any]
    # From the heartbeats the worker and beat write, not from the sweeper, which runs on the
    # worker: with no live worker nothing else says that sagas have stopped moving.
    liveness: Liveness
    # The analytics consumer's position on the event stream (None: it has never run).
    stream_lag: ConsumerLag | None = None


def dashboard_summary(*, now: datetime | None = None, limit: int = 50) -> Dashboard:
    """Everything the dashboard shows, in about ten indexed queries."""
    now = now or timezone.now()
    stuck = SagaInstance.objects.filter(stuck=True, state__in=ACTIVE_STATES)
    failed = SagaInstance.objects.filter(state=SagaState.FAILED)
    return Dashboard(
        generated_at=now,
        state_counts=saga_state_counts(now=now),
        active=saga_active_counts(),
        # Oldest first: the saga that has waited longest for an operator is at the top.
        stuck=list(stuck.only(*_LIST_FIELDS).order_by("stuck_since", "id")[:limit]),
        stuck_count=stuck.count(),
        failed=list(failed.only(*_LIST_FIELDS).order_by("finished_at", "id")[:limit]),
        failed_count=failed.count(),
        overdue_count=saga_overdue_count(now=now),
        backlog=outbox_backlog(),
        dead_letters=list(
            DeadLetter.objects.filter(status=DeadLetter.Status.DEAD)
            .defer("envelope", "traceback")
            .order_by("-created_at")[:10]
        ),
        dead_letter_count=dead_letter_count(),
        throughput=saga_throughput(now=now),
        violations=dashboard_violations(),
        liveness=liveness(),
        stream_lag=consumer_lag(),
    )


def dashboard_violations() -> list[Any]:
    """Open invariant violations across contexts (money, stock, shipments) found by the
    consistency auditor, longest-standing first. Each item is shown with its ``str()``."""

    return list(open_violations(limit=50))


# ---------------------------------------------------------------------------
# The saga page.
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TimelineEntry:
    at: datetime | None
    kind: str  # "attempt" or "event"
    attempt: SagaStep | None = None
    event: SagaEvent | None = None


@dataclass(frozen=True)
class MessageRow:
    message: OutboxMessage
    handled_by: list[InboxMessage]
    dead_letters: list[DeadLetter]


@dataclass
class LineageStep:
    step: str
    phase: str
    key: str
    attempts: list[SagaStep] = field(default_factory=list)
    records: list[KeyRecord] = field(default_factory=list)


@dataclass(frozen=True)
class OrderContext:
    """The order and what each context holds for it: money, stock, shipment."""

    order: Order
    lines: list[Any]
    notifications: list[Any]
    payments: list[Payment]
    ledger: list[LedgerEntry]
    net_charged: int
    reservations: list[Reservation]
    movements: list[StockMovement]
    shipments: list[Shipment]


@dataclass(frozen=True)
class SagaDetail:
    saga: SagaInstance
    definition: SagaDefinition | None
    step_strip: list[dict[str, str]]
    timeline: list[TimelineEntry]
    messages: list[MessageRow]
    dead_letters: list[DeadLetter]
    audit: list[AuditLog]
    order: OrderContext | None
    client_name: str
    lineage: list[LineageStep]


def saga_detail(*, saga_id: object) -> SagaDetail:
    """Everything the saga page shows. Raises SagaInstance.DoesNotExist."""
    saga = SagaInstance.objects.get(pk=saga_id)
    try:
        definition: SagaDefinition | None = definition_for(saga.definition_name, saga.definition_version)
    except LookupError:
        definition = None
    attempts = list(SagaStep.objects.filter(saga=saga).order_by("id"))
    events = list(SagaEvent.objects.filter(saga=saga).order_by("id"))
    messages = list(OutboxMessage.objects.filter(correlation_id=str(saga.id)).order_by("id"))
    dead_letters = list(DeadLetter.objects.filter(correlation_id=str(saga.id)).order_by("id"))
    links = dead_letter_sagas(dead_letters)
    for letter in dead_letters:  # its attempt, and what it is to the saga now, for the page
        letter.saga_link = links.get(letter.pk)
    order = _order_context(saga)
    return SagaDetail(
        saga=saga,
        definition=definition,
        step_strip=_step_strip(saga, definition),
        timeline=_timeline(attempts, events),
        messages=_with_handlers(messages, dead_letters),
        dead_letters=dead_letters,
        audit=list(AuditLog.objects.filter(saga=saga).select_related("actor").order_by("-id")),
        order=order,
        client_name=(order.order.client.get_username() if order and order.order.client else ""),
        lineage=_lineage(attempts, order),
    )


def _step_strip(saga: SagaInstance, definition: SagaDefinition | None) -> list[dict[str, str]]:
    """Each step of the definition with where the saga is on it, for a one-line overview."""
    if definition is None:
        return []
    strip = []
    for step in definition.steps:
        if step.name in saga.compensated_steps:
            status, css = "compensated", "compensated"
        elif step.name == saga.current_step and saga.state == SagaState.FAILED:
            status, css = "compensation failed", "failed"
        elif step.name == saga.current_step and not saga.is_terminal:
            status, css = ("stuck", "stuck") if saga.stuck else (f"current ({saga.phase})", "current")
        elif step.name in saga.completed_steps:
            status, css = "done", "done"
        else:
            status, css = "not run", "pending"
        strip.append({"name": step.name, "kind": str(step.kind), "status": status, "css": css})
    return strip


def _timeline(attempts: list[SagaStep], events: list[SagaEvent]) -> list[TimelineEntry]:
    entries = [TimelineEntry(at=row.sent_at, kind="attempt", attempt=row) for row in attempts]
    entries += [TimelineEntry(at=event.created_at, kind="event", event=event) for event in events]
    # Both timestamps are the database's clock, so they order the two logs consistently. At the
    # same instant an event goes first: an operator's action or a resend causes the attempt.
    far_past = datetime.min.replace(tzinfo=timezone.get_current_timezone())
    return sorted(entries, key=lambda entry: (entry.at or far_past, 0 if entry.kind == "event" else 1))


def _with_handlers(messages: list[OutboxMessage], dead_letters: list[DeadLetter]) -> list[MessageRow]:
    consumers = ["default", *settings.MESSAGE_QUEUES]
    handled: dict[str, list[InboxMessage]] = defaultdict(list)
    if messages:
        # (consumer, message_id) is the inbox's unique index: both columns narrow the lookup.
        rows = InboxMessage.objects.filter(
            consumer__in=consumers, message_id__in=[message.message_id for message in messages]
        ).order_by("id")
        for row in rows:
            handled[str(row.message_id)].append(row)
    dead: dict[str, list[DeadLetter]] = defaultdict(list)
    for letter in dead_letters:
        dead[letter.message_id].append(letter)
    return [
        MessageRow(
            message=message,
            handled_by=handled[str(message.message_id)],
            dead_letters=dead[str(message.message_id)],
        )
        for message in messages
    ]


def _order_context(saga: SagaInstance) -> OrderContext | None:
    """The order and what each context holds for it, each read through that context's
    selectors."""
    if saga.aggregate != "order":
        return None
    order = order_with_lines_and_notices(order_id=_int_or_none(saga.aggregate_id))
    if order is None:
        return None
    money = payment_summary_of_order(order_id=order.pk)
    reservations = reservations_of_order(order.pk)
    return OrderContext(
        order=order,
        lines=list(order.lines.all()),
        notifications=list(order.notifications.all()),
        payments=payments_of_order(order_id=order.pk),
        ledger=ledger_of_order(order_id=order.pk),
        net_charged=money.amount_charged - money.amount_refunded,
        reservations=reservations,
        movements=movements_of_reservations([r.pk for r in reservations]),
        shipments=shipments_of_order(order_id=order.pk),
    )


def _lineage(attempts: list[SagaStep], order: OrderContext | None) -> list[LineageStep]:
    """Each step key with its attempts (command and reply message ids) and what the key led
    to in the contexts and at the providers, whose keys are derived from it."""
    steps: dict[str, LineageStep] = {}
    for row in attempts:
        entry = steps.setdefault(
            row.idempotency_key, LineageStep(step=row.step, phase=row.phase, key=row.idempotency_key)
        )
        entry.attempts.append(row)
    keys = list(steps)
    if not keys:
        return []
    records: dict[str, list[KeyRecord]] = defaultdict(list)
    # Each context answers for what the keys led to in it and at its provider.
    for record in (
        *payment_records_of_step_keys(keys),
        *stock_records_of_step_keys(keys),
        *shipping_records_of_step_keys(keys),
    ):
        records[record.step_key].append(record)
    for key, entry in steps.items():
        entry.records = records.get(key, [])
    return list(steps.values())


def _int_or_none(value: str) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def saga_id_or_none(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value).strip())
    except ValueError:
        return None


@dataclass
class MessageNode:
    """One message of a saga and the messages it caused (their causation id is its id)."""

    message: OutboxMessage
    children: list[MessageNode] = field(default_factory=list)
    depth: int = 0
    first: bool = False

    @property
    def cause(self) -> str:
        """What caused a root message, in words: the origin publish() recorded (an operator,
        the sweeper, the request), or what can be told without it."""
        message = self.message
        if message.causation_id:
            return f"caused by message {message.causation_id}, no longer stored"
        origin = str((message.headers or {}).get("origin", ""))
        kind, _, rest = origin.partition(" ")
        if kind == "operator":
            return f"sent by {origin}"
        if kind == "task":
            return "sent again by the sweeper" if rest == "sagas.sweep" else f"sent by the periodic task {rest}"
        if kind == "request":
            return f"caused by the request that started the saga (request {rest})"
        if self.first:
            return "caused by the placing of the order that started the saga"
        return "caused by no recorded message or actor"


def message_tree(*, correlation_id: str) -> list[MessageNode]:
    """The saga's messages as a causality forest, in depth-first order of who caused whom.

    Roots are messages caused by no message of this saga: the first command (caused by the
    API request) and commands sent by the sweeper or an operator; each root says which
    (:attr:`MessageNode.cause`). A message whose cause was purged by retention also becomes a
    root rather than disappearing.
    """

    messages = messages_of_correlation(correlation_id)
    nodes = {str(message.message_id): MessageNode(message, first=index == 0) for index, message in enumerate(messages)}
    roots: list[MessageNode] = []
    for message in messages:  # in id order: children keep the order they were written in
        node = nodes[str(message.message_id)]
        parent = nodes.get(message.causation_id) if message.causation_id else None
        (parent.children if parent is not None and parent is not node else roots).append(node)
    _set_depths(roots, 0)
    return roots


def _set_depths(nodes: list[MessageNode], depth: int) -> None:
    stack = [(node, depth) for node in reversed(nodes)]
    while stack:  # iterative: a long retry chain must not hit the recursion limit
        node, level = stack.pop()
        node.depth = level
        stack.extend((child, level + 1) for child in reversed(node.children))


def message_tree_rows(*, correlation_id: str) -> list[MessageNode]:
    """:func:`message_tree` flattened depth first, for a table indented by depth."""
    rows: list[MessageNode] = []
    stack = list(reversed(message_tree(correlation_id=correlation_id)))
    while stack:
        node = stack.pop()
        rows.append(node)
        stack.extend(reversed(node.children))
    return rows


# ---------------------------------------------------------------------------
# Dead letters and their sagas.
# ---------------------------------------------------------------------------


class DeadLetterMark(StrEnum):
    """What a saga's dead letter is to its saga now."""

    CURRENT = "current attempt"  # the attempt the saga waits on: replaying it resumes the saga
    SUPERSEDED = "superseded"  # a later attempt of its step exists, or the saga left the step
    SAGA_FINISHED = "saga finished"  # nothing waits for it any more


@dataclass(frozen=True)
class DeadLetterSaga:
    """A dead letter's saga, the step attempt it carried, and what it is to that saga now."""

    saga_id: uuid.UUID
    step: str
    phase: str
    attempt: int
    mark: DeadLetterMark
    why: str

    @property
    def replay_refusal(self) -> str | None:
        """Why replaying it is refused, or None: only the current attempt's letter may go again
        (any other could only be ignored by its saga, or redo what the saga has moved past)."""
        if self.mark == DeadLetterMark.CURRENT:
            return None
        return f"{self.mark}: {self.why}; discard it instead"


def dead_letter_sagas(dead_letters: Iterable[DeadLetter]) -> dict[int, DeadLetterSaga]:
    """For each dead letter of a saga's command or reply (by pk), its saga and mark, read in
    two queries for the whole list. Dead letters that belong to no saga are left out."""
    addresses: dict[int, tuple[uuid.UUID, StepAddress]] = {}
    for letter in dead_letters:
        address = step_address_of(letter.envelope)
        saga_id = saga_id_or_none(address.saga_id) if address is not None else None
        if address is not None and saga_id is not None:
            addresses[letter.pk] = (saga_id, address)
    positions = saga_positions(saga_ids=[saga_id for saga_id, _ in addresses.values()])
    found = {}
    for pk, (saga_id, address) in addresses.items():
        position = positions.get(saga_id)
        if position is not None:
            found[pk] = _dead_letter_saga(saga_id, address, position)
    return found


def _dead_letter_saga(saga_id: uuid.UUID, address: StepAddress, position: SagaPosition) -> DeadLetterSaga:
    attempt = f"{address.step} ({address.phase}) attempt {address.attempt}"

    def marked(mark: DeadLetterMark, why: str) -> DeadLetterSaga:
        return DeadLetterSaga(saga_id, address.step, address.phase, address.attempt, mark, why)

    if position.state in (SagaState.COMPLETED, SagaState.COMPENSATED):
        return marked(DeadLetterMark.SAGA_FINISHED, f"the saga is {position.state}; nothing waits for {attempt}")
    last = position.last_attempts.get((address.step, address.phase), 0)
    if last > address.attempt:
        return marked(DeadLetterMark.SUPERSEDED, f"attempt {last} of {address.step} ({address.phase}) was sent since")
    if (address.step, address.phase, address.attempt) == (position.current_step, position.phase, position.attempt):
        return marked(DeadLetterMark.CURRENT, f"the saga ({position.state}) waits on {attempt}")
    return marked(
        DeadLetterMark.SUPERSEDED,
        f"the saga moved on to {position.current_step or '-'} ({position.phase}) attempt {position.attempt}",
    )


def dead_letter_saga(dead_letter: DeadLetter) -> DeadLetterSaga | None:
    return dead_letter_sagas([dead_letter]).get(dead_letter.pk)


@dataclass(frozen=True)
class FailureGroup:
    consumer: str
    type: str
    error_class: str
    count: int


@dataclass(frozen=True)
class SagaGroup:
    correlation_id: str
    count: int


def dead_letter_groups(*, limit: int = 10) -> tuple[list[FailureGroup], list[SagaGroup]]:
    """The dead letters waiting for an operator, counted by failure (consumer, type, error
    class) and by saga (correlation id), largest first (over the status index)."""
    waiting = DeadLetter.objects.filter(status=DeadLetter.Status.DEAD)
    failures = [
        FailureGroup(row["consumer"], row["type"], row["error_class"], row["n"])
        for row in waiting.values("consumer", "type", "error_class")
        .annotate(n=Count("id"))
        .order_by("-n", "consumer", "type", "error_class")[:limit]
    ]
    sagas = [
        SagaGroup(row["correlation_id"], row["n"])
        for row in waiting.exclude(correlation_id="")
        .values("correlation_id")
        .annotate(n=Count("id"))
        .order_by("-n", "correlation_id")[:limit]
    ]
    return failures, sagas
