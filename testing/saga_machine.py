"""A state machine of a few orders' sagas under everything that can happen to their messages
and everything an operator can do, for Hypothesis to explore (issue 24).

Its rules are the events of the real system, run in this process through the real consumer
path (``outbox.consumer.deliver``): the relay hands any unpublished message to the broker,
which delivers any copy it holds, in any order, possibly twice; a delivery fails transiently
(before or after its provider call), crashes after its provider call and before its commit,
or dead-letters; an operator replays a dead letter, or takes any action the console offers
(retry, compensate, retry the compensation, mark done by hand with the evidence an honest
operator would give); the sweeper runs with the clock moved past resend times and deadlines;
a customer cancels; stock is received, or another order takes it.

Its invariants hold after every rule (no refund twice of one charge, stock equal to its
movements, never more charged than the total), and at quiescence (everything delivered with
no faults, stuck sagas resolved by an operator) for every terminal order: net charged equals
the total for a confirmed order and zero for a cancelled one, at the gateway and in the
ledger; a cancelled order holds no stock and no live shipment at the carrier; the auditor
finds nothing the invariants do not.

Each example runs in a transaction rolled back at its end, so examples share nothing.
"""

import dataclasses
import functools
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, Sum
from django.utils import timezone
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from audit.services import audit_run
from common.faults import faults_clear
from console.operations import (
    SagaAction,
    attempt_fate,
    dead_letter_replay_by_operator,
    saga_actions_available,
    saga_compensate,
    saga_mark_step_done,
    saga_retry_compensation,
    saga_retry_step,
)
from inventory.models import Reservation, StockLevel, StockMovement
from inventory.services import product_upsert, stock_receive
from orders.models import Notification, Order
from orders.services import Customer, LineInput, order_place
from outbox import consumer
from outbox.consumer import RetryLater, deliver
from outbox.models import DeadLetter, OutboxMessage
from outbox.stream import STREAM_DESTINATION
from payments.gateway import ChargeAlreadyRefunded, FakeGateway
from payments.models import GatewayCharge, LedgerEntry
from payments.services import provider_key
from sagas.exceptions import CancellationRefused, SagaActionRefused
from sagas.keys import saga_keys_prefix, step_key
from sagas.models import Phase, SagaInstance, SagaState
from sagas.orchestrator import saga_request_cancel, saga_sweep
from shipping.carrier import FakeCarrier
from shipping.models import CarrierShipment, Shipment
from shipping.services import carrier_key
from testing.messages import sent_envelope

ADDRESS = {"line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE"}
SKU = "SKU-PROP"
PRICE = 4500
MAX_ORDERS = 4
TERMINAL = (SagaState.COMPLETED, SagaState.COMPENSATED)
REASON = "explored"

# How a delivery goes: as it should, or failing before / after its provider call (the latter
# is the crash between the gateway's answer and our commit), on an early attempt (retried) or
# on the last one (dead-lettered).
DELIVERY_MODES = ["ok", "ok", "ok", "fail_before", "fail_after", "dead_before", "dead_after"]


class InjectedFailure(RuntimeError):
    """A delivery failed on purpose (a timeout, a dropped connection)."""


@contextmanager
def failing_deliveries(*, after_call: bool) -> Iterator[None]:
    """Every handler fails: before its provider call (``prepare`` raises), or after it, inside
    the handler's transaction (the call took effect, the commit never comes)."""

    def fail(*_: object) -> None:
        raise InjectedFailure("injected " + ("after the provider call" if after_call else "before the provider call"))

    saved = dict(consumer._registry)
    for key, registration in saved.items():
        if after_call or registration.prepare is None:
            consumer._registry[key] = dataclasses.replace(registration, handle=fail)
        else:
            consumer._registry[key] = dataclasses.replace(registration, prepare=fail)
    try:
        yield
    finally:
        consumer._registry.clear()
        consumer._registry.update(saved)


def tracked(method):
    """Notes whether the rule or invariant finished: after a failure, teardown does not drain
    and check again (a second failure would hide the first one's example)."""

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        self._last_rule_done = False
        result = method(self, *args, **kwargs)
        self._last_rule_done = True
        return result

    return run


@dataclasses.dataclass
class Copy:
    """A message the broker holds, and the delivery attempt it will come as."""

    envelope: dict
    attempt: int = 0


class SagaMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        faults_clear()
        self._transaction = transaction.atomic()
        self._transaction.__enter__()
        self.product = product_upsert(sku=SKU, name="Grinder", price_amount=PRICE)
        self.saga_ids: list[str] = []
        self.broker: list[Copy] = []
        # Charges an operator made in the provider's console, by order: the gateway's books
        # of an order are its saga's keys and these.
        self.console_charges: dict[int, list[str]] = {}
        self.quiescent_checked = False
        self._last_rule_done = True

    # -- set-up --------------------------------------------------------------------------

    @initialize(stock=st.integers(0, 2), quantities=st.lists(st.integers(1, 2), min_size=1, max_size=2))
    @tracked
    def place_orders(self, stock: int, quantities: list[int]) -> None:
        if stock:
            stock_receive(product=self.product, quantity=stock)
        for quantity in quantities:
            self._place(quantity)

    def _place(self, quantity: int) -> None:
        order = order_place(
            customer=Customer(email="ann@example.com", name="Ann"),
            lines=[LineInput(sku=SKU, quantity=quantity)],
            payment_token="tok_visa",
            shipping_address=ADDRESS,
        ).order
        self.saga_ids.append(str(order.saga_id))

    def teardown(self) -> None:
        try:
            if self._last_rule_done and not self.quiescent_checked:
                self.quiesce_and_check()
        finally:
            transaction.set_rollback(True)
            self._transaction.__exit__(None, None, None)
            faults_clear()

    # -- messages ------------------------------------------------------------------------

    def _pending(self) -> list[tuple[str, object]]:
        unpublished = list(
            OutboxMessage.objects.filter(published_at__isnull=True)
            .exclude(destination=STREAM_DESTINATION)
            .order_by("id")
        )
        return [("outbox", message) for message in unpublished] + [("broker", copy) for copy in self.broker]

    @precondition(
        lambda self: (
            self.broker
            or OutboxMessage.objects.filter(published_at__isnull=True).exclude(destination=STREAM_DESTINATION).exists()
        )
    )
    @rule(data=st.data())
    @tracked
    def deliver_a_message(self, data: st.DataObject) -> None:
        """Relay any unpublished message (keeping a duplicate copy in the broker, sometimes),
        or deliver any copy the broker holds; the delivery goes as ``mode`` says."""
        pending = self._pending()
        source, item = data.draw(st.sampled_from(pending), label="message")
        if source == "outbox":
            OutboxMessage.objects.filter(pk=item.pk).update(published_at=timezone.now())
            copy = Copy(sent_envelope(item))
            if data.draw(st.booleans(), label="duplicated"):
                self.broker.append(Copy(sent_envelope(item)))
        else:
            self.broker.remove(item)
            copy = item
        self._deliver(copy, data.draw(st.sampled_from(DELIVERY_MODES), label="mode"))

    def _deliver(self, copy: Copy, mode: str) -> None:
        attempt = copy.attempt
        if mode.startswith("dead"):
            attempt = settings.OUTBOX_MAX_ATTEMPTS - 1
        failing = failing_deliveries(after_call=mode.endswith("after")) if mode != "ok" else _nothing()
        try:
            with failing:
                deliver(copy.envelope, attempt=attempt)
        except RetryLater:
            self.broker.append(Copy(copy.envelope, attempt + 1))

    @precondition(lambda self: DeadLetter.objects.filter(status=DeadLetter.Status.DEAD).exists())
    @rule(data=st.data())
    @tracked
    def replay_a_dead_letter(self, data: st.DataObject) -> None:
        dead = list(DeadLetter.objects.filter(status=DeadLetter.Status.DEAD).order_by("id"))
        dead_letter = data.draw(st.sampled_from(dead), label="dead letter")
        try:
            dead_letter_replay_by_operator(dead_letter_id=dead_letter.pk, actor=None, reason=REASON)
        except SagaActionRefused:
            pass

    # -- time ----------------------------------------------------------------------------

    @rule(seconds=st.sampled_from([6, 60, 400]))
    @tracked
    def sweep_later(self, seconds: int) -> None:
        """Run the sweeper ``seconds`` later: past the first resend (5 s in tests), past a few
        doubled ones, or past the step's deadline (300 s)."""
        _move_clock(seconds)
        saga_sweep()

    # -- people --------------------------------------------------------------------------

    @rule(data=st.data())
    @tracked
    def operator_acts(self, data: st.DataObject) -> None:
        saga = SagaInstance.objects.get(pk=data.draw(st.sampled_from(self.saga_ids), label="saga"))
        actions = saga_actions_available(saga=saga)
        if not actions:
            return
        action = data.draw(st.sampled_from(actions), label="action")
        self._act(saga, action, delivered_here=data.draw(st.booleans(), label="record delivered here"))

    def _act(self, saga: SagaInstance, action: str, *, delivered_here: bool = True) -> None:
        arguments = {"saga_id": saga.pk, "actor": None, "reason": REASON}
        in_flight = attempt_fate(saga)[1] == "in_flight"
        if action == SagaAction.MARK_STEP_DONE and in_flight and saga.current_step == "create_shipment":
            # The console warns that an attempt is in flight and may still take effect: a parcel
            # booked by hand outside the carrier then may go twice, and only the operator can
            # undo it (see the README). A charge by hand that loses is refunded by payments.
            return
        try:
            if action == SagaAction.RETRY_STEP:
                saga_retry_step(**arguments)
            elif action == SagaAction.COMPENSATE:
                saga_compensate(**arguments)
            elif action == SagaAction.RETRY_COMPENSATION:
                saga_retry_compensation(**arguments)
            else:
                saga_mark_step_done(**arguments, evidence=self._do_by_hand(saga))
                if delivered_here:
                    self._deliver_record_by_hand(saga)
        except SagaActionRefused:
            pass

    def _deliver_record_by_hand(self, saga: SagaInstance) -> None:
        """The record by hand is handled in the operator's process right after the commit,
        ahead of any backlog (``deliver_here``); when that fails, the relay takes it."""
        record = (
            OutboxMessage.objects.filter(correlation_id=str(saga.pk), published_at__isnull=True, aggregate="saga_step")
            .order_by("-id")
            .first()
        )
        if record is not None:
            OutboxMessage.objects.filter(pk=record.pk).update(published_at=timezone.now())
            self._deliver(Copy(sent_envelope(record)), "ok")

    def _do_by_hand(self, saga: SagaInstance) -> str:
        """What an honest operator does outside the system before marking the current step
        done, and the evidence they give: they look at the provider's books first."""
        order = Order.objects.get(saga_id=saga.pk)
        step, phase = saga.current_step, saga.phase
        if (step, phase) == ("charge_payment", Phase.FORWARD):
            existing = self._live_charges(order)
            if existing:
                return f"the customer was charged already: {existing[0].transaction_id}"
            charge = FakeGateway().charge(
                idempotency_key=f"console:{uuid.uuid4()}", amount=order.total_amount, currency="EUR", token="tok_visa"
            )
            self.console_charges.setdefault(order.pk, []).append(charge.transaction_id)
            return f"charged {charge.transaction_id} in the provider's console"
        if (step, phase) == ("charge_payment", Phase.COMPENSATION):
            refunds = []
            for charge in self._live_charges(order):
                try:
                    refund = FakeGateway().refund(
                        idempotency_key=f"console:{uuid.uuid4()}",
                        charge_transaction_id=charge.transaction_id,
                        amount=charge.amount,
                        currency=charge.currency,
                    )
                except ChargeAlreadyRefunded as already:
                    refund = already.refund
                refunds.append(refund.transaction_id)
            return f"refunded {', '.join(refunds)} in the provider's console" if refunds else "nothing was charged"
        if (step, phase) == ("create_shipment", Phase.COMPENSATION):
            FakeCarrier().cancel_shipment(idempotency_key=carrier_key(step_key(saga.pk, "create_shipment")))
            return "cancelled with the carrier by phone"
        return f"{step} ({phase}) done by hand"

    @rule(data=st.data())
    @tracked
    def customer_cancels(self, data: st.DataObject) -> None:
        try:
            saga_request_cancel(saga_id=data.draw(st.sampled_from(self.saga_ids), label="saga"), reason="changed mind")
        except CancellationRefused:
            pass

    @rule(quantity=st.integers(1, 2))
    @tracked
    def receive_stock(self, quantity: int) -> None:
        stock_receive(product=self.product, quantity=quantity)

    @precondition(lambda self: len(self.saga_ids) < MAX_ORDERS)
    @rule()
    @tracked
    def another_order_takes_the_stock(self) -> None:
        available = StockLevel.objects.get(product=self.product).available
        self._place(max(available, 1))

    # -- invariants at every step ----------------------------------------------------------

    @invariant()
    @tracked
    def stock_equals_its_movements(self) -> None:
        for level in StockLevel.objects.all():
            moved = StockMovement.objects.filter(product_id=level.product_id).aggregate(
                received=Sum("quantity", filter=Q(kind=StockMovement.Kind.RECEIPT), default=0),
                reserved=Sum("quantity", filter=Q(kind=StockMovement.Kind.RESERVE), default=0),
                released=Sum("quantity", filter=Q(kind=StockMovement.Kind.RELEASE), default=0),
            )
            assert level.on_hand == moved["received"], f"on hand {level.on_hand}, movements {moved}"
            assert level.reserved == moved["reserved"] - moved["released"], f"reserved {level.reserved}, {moved}"

    @invariant()
    @tracked
    def no_charge_is_refunded_twice_or_beyond_its_amount(self) -> None:
        for charge in GatewayCharge.objects.filter(kind=GatewayCharge.Kind.CHARGE, succeeded=True):
            refunds = GatewayCharge.objects.filter(
                kind=GatewayCharge.Kind.REFUND, succeeded=True, charge_transaction_id=charge.transaction_id
            )
            assert refunds.count() <= 1, f"charge {charge.transaction_id} refunded {refunds.count()} times"
            assert sum(refund.amount for refund in refunds) <= charge.amount

    def _never_more_charged_than_the_total(self) -> None:
        """At quiescence only: a charge that lands after its step was decided elsewhere is
        given back by a message of its own, so for a moment an order may hold two."""
        for order in self._orders():
            assert self._gateway_net(order) <= order.total_amount, f"order {order.pk} charged beyond its total"
            assert self._ledger_net(order) <= order.total_amount, f"order {order.pk} booked beyond its total"

    # -- quiescence ------------------------------------------------------------------------

    def quiesce_and_check(self) -> None:
        faults_clear()
        self._drain()
        for _ in range(4):
            if not self._resolve_by_operator():
                break
            self._drain()
        # What the dead letters list shows is replayed once, as an operator clears it: a copy
        # that died after its provider call finds its step decided and undoes the call.
        for dead_letter in DeadLetter.objects.filter(status=DeadLetter.Status.DEAD):
            try:
                dead_letter_replay_by_operator(dead_letter_id=dead_letter.pk, actor=None, reason=REASON)
            except SagaActionRefused:
                pass
        self._drain()
        self._never_more_charged_than_the_total()
        self.quiescent_checked = True
        self._check_end_state()

    def _drain(self, *, rounds: int = 8) -> None:
        """Deliver every copy and every unpublished message, then let the sweeper resend
        what went unanswered, until nothing moves."""
        for _ in range(rounds):
            moved = False
            for _ in range(200):
                pending = self._pending()
                if not pending:
                    break
                moved = True
                source, item = pending[0]
                if source == "outbox":
                    OutboxMessage.objects.filter(pk=item.pk).update(published_at=timezone.now())
                    copy = Copy(sent_envelope(item))
                else:
                    self.broker.remove(item)
                    copy = Copy(item.envelope)  # no failure is left: a first attempt again
                self._deliver(copy, "ok")
            else:
                raise AssertionError("messages kept coming")
            _move_clock(settings.SAGA_RESEND_AFTER_SECONDS * 2**6 + 1)
            counts = saga_sweep()
            if not moved and not any(counts.values()):
                return

    def _resolve_by_operator(self) -> bool:
        """An operator resolves the sagas left waiting for one: retries a stuck step, retries a
        failed compensation, or marks it done by hand when retrying did not help."""
        acted = False
        for saga in SagaInstance.objects.filter(pk__in=self.saga_ids).exclude(state__in=TERMINAL):
            actions = saga_actions_available(saga=saga)
            retried = saga.events.filter(kind__in=["operator_retry_step", "operator_retry_compensation"]).count()
            if saga.state == SagaState.FAILED:
                action = SagaAction.RETRY_COMPENSATION if retried < 2 else SagaAction.MARK_STEP_DONE
            elif saga.stuck:
                action = SagaAction.RETRY_STEP if retried < 2 else SagaAction.MARK_STEP_DONE
            else:
                continue
            if action in actions:
                self._act(saga, action)
                acted = True
        return acted

    def _check_end_state(self) -> None:
        consistent = set()
        for order in self._orders():
            saga = SagaInstance.objects.get(pk=order.saga_id)
            gateway, ledger = self._gateway_net(order), self._ledger_net(order)
            live_charges = self._live_charges(order)
            assert len(live_charges) <= 1, f"order {order.pk} ({saga.state}) has {len(live_charges)} live charges"
            if saga.state not in TERMINAL:
                continue  # left to an operator: only the money checks above and below hold
            assert order.status == (
                Order.Status.CONFIRMED if saga.state == SagaState.COMPLETED else Order.Status.CANCELLED
            ), f"order {order.pk} is {order.status} for a {saga.state} saga"
            live_at_carrier = CarrierShipment.objects.filter(
                idempotency_key=carrier_key(step_key(saga.pk, "create_shipment")), accepted=True, cancelled=False
            ).count()
            live_shipments = Shipment.objects.filter(
                order_id=order.pk, status__in=[Shipment.Status.CREATED, Shipment.Status.DISPATCHED]
            ).count()
            live_reservations = Reservation.objects.filter(order_id=order.pk, status=Reservation.Status.RESERVED)
            notices = set(Notification.objects.filter(order=order).values_list("kind", flat=True))
            if order.status == Order.Status.CONFIRMED:
                assert (gateway, ledger) == (order.total_amount, order.total_amount), (
                    f"confirmed order {order.pk} of {order.total_amount}: net {gateway} at the gateway, {ledger} booked"
                )
                assert live_shipments == 1 and live_at_carrier <= 1, f"confirmed order {order.pk} shipments"
                assert live_reservations.count() == 1, f"confirmed order {order.pk} reservations"
                assert Notification.Kind.CANCELLATION not in notices
            else:
                assert (gateway, ledger) == (0, 0), (
                    f"cancelled order {order.pk}: net {gateway} at the gateway, {ledger} booked"
                )
                assert not live_reservations.exists(), f"cancelled order {order.pk} holds stock"
                assert live_at_carrier == 0, f"cancelled order {order.pk} has a live shipment at the carrier"
                assert live_shipments == 0, f"cancelled order {order.pk} has a live shipment"
                assert Notification.Kind.CONFIRMATION not in notices
            consistent.add(order.pk)
        self._check_auditor_agrees(consistent)

    def _check_auditor_agrees(self, consistent: set[int]) -> None:
        """The auditor reports nothing about what the invariants found consistent."""
        waiting = {
            str(saga_id)
            for saga_id in SagaInstance.objects.filter(pk__in=self.saga_ids)
            .exclude(state__in=TERMINAL)
            .values_list("pk", flat=True)
        }
        report = audit_run(full=True)
        unexplained = [
            finding
            for finding in report.findings
            if not (finding.involved.get("saga") in waiting or _order_of(finding) not in consistent | {None})
        ]
        assert not unexplained, "the auditor reports what the invariants do not: " + "; ".join(
            f"{finding.kind} {finding.key}: {finding.detail}" for finding in unexplained
        )

    # -- the books -------------------------------------------------------------------------

    def _orders(self) -> list[Order]:
        return list(Order.objects.filter(saga_id__in=self.saga_ids).order_by("id"))

    def _gateway_charges(self, order: Order):
        return GatewayCharge.objects.filter(kind=GatewayCharge.Kind.CHARGE, succeeded=True).filter(
            Q(idempotency_key__startswith=provider_key(saga_keys_prefix(order.saga_id)))
            | Q(transaction_id__in=self.console_charges.get(order.pk, []))
        )

    def _refunds_of(self, charges) -> "GatewayCharge.objects":
        return GatewayCharge.objects.filter(
            kind=GatewayCharge.Kind.REFUND,
            succeeded=True,
            charge_transaction_id__in=[charge.transaction_id for charge in charges],
        )

    def _live_charges(self, order: Order) -> list[GatewayCharge]:
        charges = list(self._gateway_charges(order))
        refunded = set(self._refunds_of(charges).values_list("charge_transaction_id", flat=True))
        return [charge for charge in charges if charge.transaction_id not in refunded]

    def _gateway_net(self, order: Order) -> int:
        charges = list(self._gateway_charges(order))
        refunded = self._refunds_of(charges).aggregate(total=Sum("amount", default=0))["total"]
        return sum(charge.amount for charge in charges) - refunded

    def _ledger_net(self, order: Order) -> int:
        return LedgerEntry.objects.filter(order_id=order.pk).aggregate(
            net=Sum("amount", filter=Q(kind=LedgerEntry.Kind.CHARGE), default=0)
            - Sum("amount", filter=Q(kind=LedgerEntry.Kind.REFUND), default=0)
        )["net"]


def _move_clock(seconds: int) -> None:
    """As if ``seconds`` had passed for every active saga: its last send and deadline move back."""
    delta = timedelta(seconds=seconds)
    SagaInstance.objects.filter(state__in=[SagaState.RUNNING, SagaState.COMPENSATING]).update(
        last_sent_at=F("last_sent_at") - delta,
        step_deadline=F("step_deadline") - delta,
        step_started_at=F("step_started_at") - delta,
    )


def _order_of(finding) -> int | None:
    order = finding.involved.get("order")
    return int(order) if order is not None else None


@contextmanager
def _nothing() -> Iterator[None]:
    yield
