"""One final outcome per step key: where the operator's repairs and late copies of a command
meet a saga that moved on, nothing moves twice and nothing is announced that did not happen.

Each test is one interleaving, driven through the real consumer path (``deliver``) in the test
process; the race of two copies of one step runs them in two database sessions, held at the
point where the old code checked before it locked."""

import threading
import uuid
from datetime import timedelta
from unittest import mock

import pytest
from django.db import OperationalError, connection, connections
from django.utils import timezone

from common.faults import faults_clear, faults_set
from console.operations import saga_compensate, saga_mark_step_done
from inventory.models import Product, Reservation, StockLevel
from inventory.services import stock_receive
from orders.models import Order
from outbox.consumer import deliver
from outbox.dispatch import CommittedMessages
from outbox.models import DeadLetter, OutboxMessage
from outbox.services import dead_letter_replay
from payments.gateway import FakeGateway
from payments.models import GatewayCharge, LedgerEntry
from payments.services import provider_key
from sagas.keys import saga_keys_prefix, step_key
from sagas.models import SagaInstance, SagaState
from sagas.orchestrator import saga_sweep
from shipping.models import CarrierShipment
from shipping.services import carrier_key
from testing.messages import sent_envelope
from testing.saga_states import make_catalog, place, settle

REASON = "provider outage (INC-7)"
PRICE = 4500


@pytest.fixture(autouse=True)
def no_faults():
    faults_clear()
    yield
    faults_clear()


# ---------------------------------------------------------------------------
# Driving the saga one message at a time.
# ---------------------------------------------------------------------------


def pending(type: str | None = None) -> OutboxMessage:
    """The oldest message still waiting in the outbox (of ``type``), now handed to 'the broker'."""
    rows = OutboxMessage.objects.filter(published_at__isnull=True).order_by("id")
    message = (rows.filter(type=type) if type else rows).first()
    assert message is not None, f"no pending {type or 'message'}"
    OutboxMessage.objects.filter(pk=message.pk).update(published_at=timezone.now())
    return message


def run_until(saga: SagaInstance, step: str) -> None:
    """Deliver messages in order until the saga waits on ``step`` (its command still pending)."""
    for _ in range(30):
        saga.refresh_from_db()
        if saga.current_step == step:
            return
        deliver(sent_envelope(pending()))
    raise AssertionError(f"the saga never reached {step}")


def dead_letter_command(message: OutboxMessage, *, failure: Exception, target: str) -> DeadLetter:
    """Deliver ``message`` on its last attempt while its handler fails: it becomes a dead letter
    (and the orchestrator hears of a technical failure)."""
    from django.conf import settings

    with mock.patch(target, side_effect=failure):
        assert deliver(sent_envelope(message), attempt=settings.OUTBOX_MAX_ATTEMPTS - 1) == "dead_letter"
    return DeadLetter.objects.get(message_id=str(message.message_id))


def gateway_net(saga: SagaInstance, *also: str) -> int:
    """What the customer paid, net, at the gateway: the saga's own keys and the console's charges."""
    charges = GatewayCharge.objects.filter(kind="charge", succeeded=True)
    ours = charges.filter(idempotency_key__startswith=provider_key(saga_keys_prefix(saga.pk))) | charges.filter(
        transaction_id__in=also
    )
    charged = sum(ours.values_list("amount", flat=True))
    refunded = sum(
        GatewayCharge.objects.filter(
            kind="refund", succeeded=True, charge_transaction_id__in=list(ours.values_list("transaction_id", flat=True))
        ).values_list("amount", flat=True)
    )
    return charged - refunded


def ledger_net(order: Order) -> int:
    net = 0
    for kind, amount in LedgerEntry.objects.filter(order_id=order.pk).values_list("kind", "amount"):
        net += amount if kind == "charge" else -amount
    return net


def stock(sku: str = "SKU-A") -> StockLevel:
    return StockLevel.objects.get(product__sku=sku)


def console_charge(amount: int = PRICE) -> str:
    """An operator charges the customer in the provider's console."""
    key = f"console:{uuid.uuid4()}"
    return FakeGateway().charge(idempotency_key=key, amount=amount, currency="EUR", token="tok_visa").transaction_id


@pytest.fixture
def operator(django_user_model):
    from django.apps import apps

    from console.operators import operators_group_ensure

    user = django_user_model.objects.create_user("olga", password="pw", is_staff=True)
    user.groups.add(operators_group_ensure(apps))
    return user


# ---------------------------------------------------------------------------
# 1. A replayed reserve after out of stock.
# ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_replayed_reserve_after_out_of_stock_reserves_nothing_for_the_cancelled_order(operator):
    product = Product.objects.create(sku="SKU-A", name="Grinder", price_amount=PRICE)
    StockLevel.objects.create(product=product)  # nothing on hand
    saga = place()
    run_until(saga, "reserve_stock")
    first = pending("reserve_stock")
    dead = dead_letter_command(
        first, failure=OperationalError("could not serialize access"), target="inventory.handlers.stock_reserve"
    )
    deliver(sent_envelope(pending()))  # the orchestrator hears of the dead letter and sends attempt 2
    deliver(sent_envelope(pending("reserve_stock")))  # attempt 2: out of stock
    settle()  # refund, cancel
    saga.refresh_from_db()
    order = Order.objects.get(saga_id=saga.pk)
    assert (saga.state, order.status) == (SagaState.COMPENSATED, Order.Status.CANCELLED)

    stock_receive(product=product, quantity=5)
    dead_letter_replay(dead_letter=dead)
    settle()

    assert (stock().on_hand, stock().reserved) == (5, 0)
    assert not Reservation.objects.filter(order_id=order.pk, status=Reservation.Status.RESERVED).exists()
    assert gateway_net(saga) == 0 and ledger_net(order) == 0


# ---------------------------------------------------------------------------
# 2. The sweeper's resend racing the first reserve, in two database sessions.
# ---------------------------------------------------------------------------


def _in_session(target, *args) -> threading.Thread:
    def run():
        try:
            target(*args)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _waiting_on_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0] > 0


@pytest.mark.django_db(transaction=True)
def test_a_resend_racing_the_first_reserve_of_the_last_unit_never_cancels_an_order_holding_it():
    # Commits leave their messages in the outbox, neither sent nor nudged, for the test to deliver
    # (a worker of the test session must not pick them up).
    with mock.patch.object(CommittedMessages, "__call__", lambda self: None):
        _race_two_copies_of_the_reserve()


def _race_two_copies_of_the_reserve() -> None:
    make_catalog()
    StockLevel.objects.filter(product__sku="SKU-A").update(on_hand=1)  # one unit left
    saga = place()
    run_until(saga, "reserve_stock")
    first = pending("reserve_stock")
    # Attempt 1 is slow; the sweeper finds it unanswered and sends attempt 2 with the same key.
    SagaInstance.objects.filter(pk=saga.pk).update(last_sent_at=timezone.now() - timedelta(hours=1))
    assert saga_sweep()["resent"] == 1
    second = pending("reserve_stock")
    assert second.headers["idempotency_key"] == first.headers["idempotency_key"]

    from inventory import handlers

    real = handlers.stock_reserve
    reserved, release = threading.Event(), threading.Event()

    def slow_first(**kwargs):
        reservation = real(**kwargs)
        reserved.set()
        assert release.wait(20)  # holds its transaction open, the unit reserved but not committed
        return reservation

    with mock.patch.object(handlers, "stock_reserve", side_effect=slow_first):
        one = _in_session(deliver, sent_envelope(first))
        assert reserved.wait(20)
    # Attempt 2 runs in a session of its own, past the point where it could check "reserved?".
    two = _in_session(deliver, sent_envelope(second))
    deadline = timezone.now() + timedelta(seconds=20)
    while not _waiting_on_a_lock() and timezone.now() < deadline:
        threading.Event().wait(0.05)
    assert _waiting_on_a_lock(), "attempt 2 never waited for attempt 1"
    release.set()
    one.join(20)
    two.join(20)
    settle()

    saga.refresh_from_db()
    order = Order.objects.get(saga_id=saga.pk)
    held = Reservation.objects.filter(order_id=order.pk, status=Reservation.Status.RESERVED).exists()
    assert saga.state == SagaState.COMPLETED and order.status == Order.Status.CONFIRMED
    assert held and (stock().on_hand, stock().reserved) == (1, 1)
    assert gateway_net(saga) == PRICE == ledger_net(order)


# ---------------------------------------------------------------------------
# 3. A double charge after "mark done by hand".
# ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_charge_done_by_hand_is_final_for_the_copy_that_waited_in_a_backlog(operator):
    make_catalog()
    saga = place()
    backlog = pending("charge_payment")  # handed to the broker, stuck behind a backlog
    SagaInstance.objects.filter(pk=saga.pk).update(step_deadline=timezone.now() - timedelta(seconds=1))
    assert saga_sweep()["stuck"] == 1
    charge_id = console_charge()

    saga_mark_step_done(saga_id=saga.pk, actor=operator, reason=REASON, evidence=f"charged {charge_id} by phone")
    settle()
    deliver(sent_envelope(backlog))  # the backlog drains
    settle()

    saga.refresh_from_db()
    order = Order.objects.get(saga_id=saga.pk)
    assert saga.state == SagaState.COMPLETED and order.status == Order.Status.CONFIRMED
    assert gateway_net(saga, charge_id) == PRICE, "the customer was charged twice"
    assert ledger_net(order) == PRICE
    assert not GatewayCharge.objects.filter(idempotency_key=provider_key(step_key(saga.pk, "charge_payment"))).exists()


# ---------------------------------------------------------------------------
# 4. A refund announced that never happened.
# ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_compensating_a_charge_done_by_hand_refunds_that_charge(operator, mailoutbox):
    make_catalog()
    StockLevel.objects.filter(product__sku="SKU-A").update(on_hand=0)
    saga = place()
    pending("charge_payment")  # handed to the broker and lost there
    SagaInstance.objects.filter(pk=saga.pk).update(step_deadline=timezone.now() - timedelta(seconds=1))
    assert saga_sweep()["stuck"] == 1
    charge_id = console_charge()

    saga_mark_step_done(saga_id=saga.pk, actor=operator, reason=REASON, evidence=f"charged {charge_id}")
    settle()  # recorded by hand; the reservation is out of stock; refund; cancel

    saga.refresh_from_db()
    order = Order.objects.get(saga_id=saga.pk)
    assert saga.state == SagaState.COMPENSATED and order.status == Order.Status.CANCELLED
    assert gateway_net(saga, charge_id) == 0, "the refund was announced but never made"
    assert ledger_net(order) == 0
    refund = GatewayCharge.objects.get(kind="refund", charge_transaction_id=charge_id)
    assert refund.amount == PRICE
    assert "refunded" in mailoutbox[-1].body


# ---------------------------------------------------------------------------
# 5. A double refund.
# ---------------------------------------------------------------------------


def _refunds_dead_lettered_until_the_saga_failed() -> tuple[SagaInstance, list[DeadLetter]]:
    make_catalog()
    StockLevel.objects.filter(product__sku="SKU-A").update(on_hand=0)
    saga = place()
    run_until(saga, "reserve_stock")  # charged
    deliver(sent_envelope(pending("reserve_stock")))  # out of stock: compensate
    faults_set(gateway_refund_transient=1.0)
    dead_letters = []
    for _ in range(10):
        saga.refresh_from_db()
        if saga.state == SagaState.FAILED:
            break
        message = pending()
        if message.type == "refund_payment":
            from django.conf import settings

            deliver(sent_envelope(message), attempt=settings.OUTBOX_MAX_ATTEMPTS - 1)
            dead_letters.append(DeadLetter.objects.get(message_id=str(message.message_id)))
        else:
            deliver(sent_envelope(message))
    faults_clear()
    assert saga.state == SagaState.FAILED and dead_letters
    return saga, dead_letters


@pytest.mark.django_db
def test_replaying_a_refund_dead_letter_after_a_refund_done_by_hand_refunds_nothing_more(operator):
    saga, dead_letters = _refunds_dead_lettered_until_the_saga_failed()
    charge = GatewayCharge.objects.get(idempotency_key=provider_key(step_key(saga.pk, "charge_payment")))
    refund_id = (
        FakeGateway()
        .refund(
            idempotency_key=f"console:{uuid.uuid4()}",
            charge_transaction_id=charge.transaction_id,
            amount=charge.amount,
            currency=charge.currency,
        )
        .transaction_id
    )

    saga_mark_step_done(saga_id=saga.pk, actor=operator, reason=REASON, evidence=f"refunded {refund_id}")
    settle()
    dead_letter_replay(dead_letter=dead_letters[0])
    settle()

    saga.refresh_from_db()
    order = Order.objects.get(saga_id=saga.pk)
    assert saga.state == SagaState.COMPENSATED and order.status == Order.Status.CANCELLED
    refunds = GatewayCharge.objects.filter(kind="refund", charge_transaction_id=charge.transaction_id)
    assert refunds.count() == 1, "the charge was refunded twice"
    assert gateway_net(saga) == 0 and ledger_net(order) == 0


# ---------------------------------------------------------------------------
# 6. Compensating a deadline-stuck saga while its provider call is in flight.
# ---------------------------------------------------------------------------


def _stuck_at_its_deadline(saga: SagaInstance) -> None:
    SagaInstance.objects.filter(pk=saga.pk).update(step_deadline=timezone.now() - timedelta(seconds=1))
    assert saga_sweep()["stuck"] == 1


@pytest.mark.django_db
def test_a_shipment_booked_after_its_step_was_compensated_is_cancelled_at_the_carrier(operator):
    make_catalog()
    saga = place()
    run_until(saga, "create_shipment")
    in_flight = pending("create_shipment")
    _stuck_at_its_deadline(saga)

    from shipping.carrier import FakeCarrier

    real = FakeCarrier.create_shipment

    def book_after_the_compensation(self, **kwargs):
        # Past its "exists?" check and waiting on the carrier, the operator compensates.
        saga_compensate(saga_id=saga.pk, actor=operator, reason=REASON)
        settle()
        return real(self, **kwargs)

    with mock.patch.object(FakeCarrier, "create_shipment", book_after_the_compensation):
        deliver(sent_envelope(in_flight))
    settle()

    saga.refresh_from_db()
    order = Order.objects.get(saga_id=saga.pk)
    assert saga.state == SagaState.COMPENSATED and order.status == Order.Status.CANCELLED
    booked = CarrierShipment.objects.get(idempotency_key=carrier_key(step_key(saga.pk, "create_shipment")))
    assert booked.accepted and booked.cancelled, "the carrier holds a live shipment for a cancelled order"
    assert gateway_net(saga) == 0 and ledger_net(order) == 0
    assert (stock().on_hand, stock().reserved) == (10, 0)


@pytest.mark.django_db
def test_a_charge_made_after_its_step_was_compensated_is_refunded(operator):
    make_catalog()
    saga = place()
    in_flight = pending("charge_payment")
    _stuck_at_its_deadline(saga)

    real = FakeGateway.charge

    def charge_after_the_compensation(self, **kwargs):
        saga_compensate(saga_id=saga.pk, actor=operator, reason=REASON)
        settle()
        return real(self, **kwargs)

    with mock.patch.object(FakeGateway, "charge", charge_after_the_compensation):
        deliver(sent_envelope(in_flight))
    settle()

    saga.refresh_from_db()
    order = Order.objects.get(saga_id=saga.pk)
    assert saga.state == SagaState.COMPENSATED and order.status == Order.Status.CANCELLED
    assert GatewayCharge.objects.filter(kind="charge", succeeded=True).count() == 1
    assert gateway_net(saga) == 0, "the customer keeps a charge for a cancelled order"
    assert ledger_net(order) == 0


@pytest.mark.django_db
def test_a_charge_by_hand_that_loses_to_a_copy_in_flight_is_refunded(operator):
    make_catalog()
    saga = place()
    in_flight = pending("charge_payment")
    charge_id = console_charge()
    saga_mark_step_done(saga_id=saga.pk, actor=operator, reason=REASON, evidence=f"charged {charge_id}")
    deliver(sent_envelope(in_flight))  # the copy in flight charges and decides first
    settle()  # the record by hand meets that outcome: the console's charge is the second one

    saga.refresh_from_db()
    order = Order.objects.get(saga_id=saga.pk)
    assert saga.state == SagaState.COMPLETED and order.status == Order.Status.CONFIRMED
    assert gateway_net(saga, charge_id) == PRICE, "the customer was charged twice"
    assert GatewayCharge.objects.filter(kind="refund", charge_transaction_id=charge_id).count() == 1
    assert ledger_net(order) == PRICE


@pytest.mark.django_db
def test_a_refund_by_hand_without_its_refund_id_is_refused_while_our_books_hold_the_charge(operator):
    saga, _ = _refunds_dead_lettered_until_the_saga_failed()

    saga_mark_step_done(saga_id=saga.pk, actor=operator, reason=REASON, evidence="nothing was charged")
    settle()

    saga.refresh_from_db()
    assert saga.state == SagaState.FAILED and "could not be recorded as done by hand" in saga.failure_reason
    order = Order.objects.get(saga_id=saga.pk)
    assert ledger_net(order) == PRICE and gateway_net(saga) == PRICE  # nothing claimed that did not happen


@pytest.mark.django_db
def test_a_charge_by_hand_recorded_after_its_step_was_compensated_is_refunded(operator):
    make_catalog()
    saga = place()
    pending("charge_payment")  # lost in the broker
    _stuck_at_its_deadline(saga)
    charge_id = console_charge()
    saga_mark_step_done(saga_id=saga.pk, actor=operator, reason=REASON, evidence=f"charged {charge_id}")
    by_hand = pending("charge_payment")  # the record is left to the relay, and is late
    SagaInstance.objects.filter(pk=saga.pk).update(step_deadline=timezone.now() - timedelta(seconds=1))
    assert saga_sweep()["stuck"] == 1
    saga_compensate(saga_id=saga.pk, actor=operator, reason=REASON)  # a second operator gives up
    settle()
    deliver(sent_envelope(by_hand))
    settle()

    saga.refresh_from_db()
    order = Order.objects.get(saga_id=saga.pk)
    assert saga.state == SagaState.COMPENSATED and order.status == Order.Status.CANCELLED
    assert gateway_net(saga, charge_id) == 0, "the customer keeps the charge made by hand"
    assert ledger_net(order) == 0
