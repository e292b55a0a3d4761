"""The order saga end to end, through the real relay, broker and worker process."""

import threading
from collections.abc import Callable

import pytest
from django.db import connection
from django.db.models import Sum

from common.faults import faults_set
from conftest import wait_for
from inventory.models import Product, Reservation, StockLevel, StockMovement
from inventory.services import product_upsert, stock_receive
from orders.models import Notification, Order
from orders.services import Customer, LineInput, order_place, order_request_cancel
from payments.models import GatewayCharge, LedgerEntry, Payment
from sagas.models import Outcome, Phase, SagaInstance, SagaState, SagaStep
from shipping.models import Shipment

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

ADDRESS = {"line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE"}


def _catalog(stock: int = 10) -> Product:
    product = product_upsert(sku="SKU-A", name="Grinder", price_amount=4500)
    stock_receive(product=product, quantity=stock)
    return product


def _place(*, token: str = "tok_visa", quantity: int = 1, address: dict | None = None, sku: str = "SKU-A") -> Order:
    return order_place(
        customer=Customer(email="ann@example.com", name="Ann Smith"),
        lines=[LineInput(sku=sku, quantity=quantity)],
        payment_token=token,
        shipping_address=address or ADDRESS,
    ).order


def _saga(order: Order) -> SagaInstance:
    return SagaInstance.objects.get(pk=order.saga_id)


def _terminal(order: Order) -> Callable[[], bool]:
    return lambda: _saga(order).state in (SagaState.COMPLETED, SagaState.COMPENSATED, SagaState.FAILED)


def _wait_terminal(order: Order, worker, timeout: float = 60) -> SagaInstance:
    wait_for(_terminal(order), timeout=timeout, message=f"saga not finished: {_describe(order)}\n{worker.tail(20)}")
    return _saga(order)


def _describe(order: Order) -> str:
    saga = _saga(order)
    steps = ", ".join(f"{s.step}/{s.phase}#{s.attempt}:{s.outcome}" for s in saga.steps.all())
    return f"{saga.state} at {saga.current_step} stuck={saga.stuck} {saga.stuck_reason} [{steps}]"


def _available(product: Product) -> int:
    level = StockLevel.objects.get(product=product)
    return level.on_hand - level.reserved


def _net_charged(order: Order) -> int:
    entries = LedgerEntry.objects.filter(order_id=order.pk)
    charged = entries.filter(kind="charge").aggregate(total=Sum("amount"))["total"] or 0
    refunded = entries.filter(kind="refund").aggregate(total=Sum("amount"))["total"] or 0
    return charged - refunded


def _compensations(saga: SagaInstance) -> list[str]:
    rows = SagaStep.objects.filter(saga=saga, phase=Phase.COMPENSATION, outcome=Outcome.SUCCESS).order_by("id")
    return [row.step for row in rows]


@pytest.mark.brokers("redis", "rabbitmq")
def test_happy_path_confirms_with_one_charge_one_reservation_one_shipment_one_email(live_system):
    product = _catalog(10)
    order = _place(quantity=2)
    saga = _wait_terminal(order, live_system)
    order.refresh_from_db()
    assert saga.state == SagaState.COMPLETED, _describe(order)
    assert order.status == Order.Status.CONFIRMED
    assert GatewayCharge.objects.filter(kind="charge").count() == 1
    assert list(LedgerEntry.objects.filter(order_id=order.pk).values_list("kind", "amount")) == [("charge", 9000)]
    assert _available(product) == 8
    assert StockMovement.objects.filter(kind="reserve").count() == 1
    shipment = Shipment.objects.get(order_id=order.pk)
    assert shipment.status == Shipment.Status.CREATED and shipment.tracking_number
    assert list(Notification.objects.filter(order=order).values_list("kind", flat=True)) == ["confirmation"]
    assert saga.completed_steps == [
        "create_order",
        "charge_payment",
        "reserve_stock",
        "create_shipment",
        "confirm_order",
    ]


SCENARIOS = {
    "payment declined": (dict(token="tok_chargeDeclined"), [], "payment declined"),
    "out of stock": (dict(quantity=11), ["charge_payment"], "out of stock"),
    "address rejected": (
        dict(address={**ADDRESS, "country": "AQ"}),
        ["reserve_stock", "charge_payment"],
        "carrier rejected",
    ),
}


def _assert_compensated(order: Order, product: Product, compensated: list[str], reason: str, worker) -> None:
    saga = _wait_terminal(order, worker)
    order.refresh_from_db()
    assert saga.state == SagaState.COMPENSATED, _describe(order)
    assert _compensations(saga) == [*compensated, "create_order"], "completed steps undone in reverse order"
    assert order.status == Order.Status.CANCELLED and reason in order.cancel_reason
    assert _net_charged(order) == 0
    assert _available(product) == 10
    if "charge_payment" in compensated:  # money went back as a new entry; nothing was deleted
        assert list(LedgerEntry.objects.filter(order_id=order.pk).values_list("kind", flat=True)) == [
            "charge",
            "refund",
        ]
    if "reserve_stock" in compensated:
        kinds = list(StockMovement.objects.filter(reservation__order_id=order.pk).values_list("kind", flat=True))
        assert kinds == ["reserve", "release"]
        assert Reservation.objects.get(order_id=order.pk).status == Reservation.Status.RELEASED
    # A notice only when something was charged or held (a declined card cost its placer nothing).
    expected_notices = ["cancellation"] if compensated else []
    assert list(Notification.objects.filter(order=order).values_list("kind", flat=True)) == expected_notices


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_business_failure_compensates_completed_steps_in_reverse(live_system, scenario):
    product = _catalog(10)
    kwargs, compensated, reason = SCENARIOS[scenario]
    order = _place(**kwargs)
    _assert_compensated(order, product, compensated, reason, live_system)


@pytest.mark.brokers("redis", "rabbitmq")
def test_duplicated_and_reordered_delivery_gives_the_same_outcomes(live_system):
    product = _catalog(10)
    faults_set(duplicate_delivery=1.0, reorder_delivery=1.0)
    happy = _place(quantity=2)
    failures = {name: _place(**kwargs) for name, (kwargs, _, _) in SCENARIOS.items()}
    assert _wait_terminal(happy, live_system).state == SagaState.COMPLETED
    for order in failures.values():
        _wait_terminal(order, live_system)
    faults_set()
    happy.refresh_from_db()
    assert happy.status == Order.Status.CONFIRMED
    assert GatewayCharge.objects.filter(kind="charge", succeeded=True).count() == 3  # happy, out of stock, rejected
    assert LedgerEntry.objects.filter(order_id=happy.pk).count() == 1
    assert Notification.objects.filter(order=happy).count() == 1
    for name, order in failures.items():
        _, compensated, reason = SCENARIOS[name]
        order.refresh_from_db()
        assert order.status == Order.Status.CANCELLED, name
        assert _net_charged(order) == 0
        assert _compensations(_saga(order)) == [*compensated, "create_order"], name
        assert Notification.objects.filter(order=order).count() == (1 if compensated else 0), name
    assert _available(product) == 8
    assert SagaStep.objects.filter(outcome=Outcome.PENDING).count() == 0


@pytest.mark.brokers("redis", "rabbitmq")
def test_worker_killed_mid_step_and_flaky_gateway_still_complete_with_one_charge(live_system):
    product = _catalog(10)
    faults_set(provider_latency_ms=1500, gateway_transient=0.3)
    order = _place()
    wait_for(lambda: _saga(order).steps.exists())
    wait_for(lambda: live_system.queues.unacknowledged() > 0, message="no step was picked up")
    import time

    time.sleep(0.7)  # inside the slow gateway call
    assert live_system.kill_children()
    time.sleep(2)
    faults_set(gateway_transient=0.3)
    saga = _wait_terminal(order, live_system, timeout=90)
    assert saga.state == SagaState.COMPLETED, _describe(order)
    assert GatewayCharge.objects.filter(kind="charge").count() == 1
    assert Payment.objects.filter(order_id=order.pk).count() == 1
    assert LedgerEntry.objects.filter(order_id=order.pk).count() == 1
    assert _available(product) == 9


def test_gateway_timeout_after_charge_is_repaired_with_the_same_key(live_system):
    _catalog(10)
    # 30%: most sagas meet a timeout after the money moved, and none exhausts its nine tries
    # (three deliveries of three attempts) but once in tens of thousands of runs.
    faults_set(gateway_timeout_after_charge=0.3)
    orders = [_place() for _ in range(8)]
    for order in orders:
        assert _wait_terminal(order, live_system).state == SagaState.COMPLETED, _describe(order)
    assert GatewayCharge.objects.filter(kind="charge").count() == 8
    assert LedgerEntry.objects.filter(kind="charge").count() == 8


def test_compensation_that_keeps_failing_ends_failed_with_its_reason(live_system):
    product = _catalog(10)
    faults_set(gateway_refund_transient=1.0)
    order = _place(quantity=11)  # charged, then out of stock: the refund must run and cannot
    saga = _wait_terminal(order, live_system, timeout=60)
    assert saga.state == SagaState.FAILED, _describe(order)
    assert "refund" in saga.failure_reason or "charge_payment" in saga.failure_reason
    assert "out of stock" in saga.failure_reason
    assert saga.current_step == "charge_payment"  # the compensation it is stuck on, for an operator
    assert LedgerEntry.objects.filter(order_id=order.pk, kind="charge").count() == 1  # nothing lost
    assert _available(product) == 10
    order.refresh_from_db()
    assert order.status == Order.Status.PENDING  # not cancelled while money is still held


def test_cancellation_while_running_compensates_what_completed(live_system):
    product = _catalog(10)
    faults_set(provider_latency_ms=800)
    order = _place()
    wait_for(lambda: SagaStep.objects.filter(saga_id=order.saga_id, step="charge_payment").exists())
    order_request_cancel(order=order, reason="customer changed their mind")
    faults_set()
    saga = _wait_terminal(order, live_system)
    order.refresh_from_db()
    assert saga.state == SagaState.COMPENSATED, _describe(order)
    assert order.status == Order.Status.CANCELLED and order.cancel_reason == "customer changed their mind"
    assert _net_charged(order) == 0
    assert _available(product) == 10


def test_200_concurrent_orders_for_50_units_confirm_exactly_50(live_system):
    product = _catalog(50)
    orders: list[Order] = []
    lock = threading.Lock()

    def place(count: int) -> None:
        try:
            for _ in range(count):
                order = _place()
                with lock:
                    orders.append(order)
        finally:
            connection.close()

    threads = [threading.Thread(target=place, args=(50,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(orders) == 200
    wait_for(
        lambda: SagaInstance.objects.filter(state__in=["running", "compensating"]).count() == 0,
        timeout=180,
        interval=0.5,
        message="sagas did not all finish",
    )
    confirmed = Order.objects.filter(status=Order.Status.CONFIRMED)
    assert confirmed.count() == 50
    assert Order.objects.filter(status=Order.Status.CANCELLED).count() == 150
    assert SagaInstance.objects.filter(state=SagaState.COMPENSATED).count() == 150
    assert _available(product) == 0
    charged = LedgerEntry.objects.filter(kind="charge").aggregate(total=Sum("amount"))["total"]
    refunded = LedgerEntry.objects.filter(kind="refund").aggregate(total=Sum("amount"))["total"]
    assert charged - refunded == confirmed.aggregate(total=Sum("total_amount"))["total"] == 50 * 4500


def test_each_row_a_step_makes_names_its_saga_and_step_and_each_reply_reaches_the_saga_data(live_system):
    _catalog(10)
    order = _place(quantity=1)
    saga = _wait_terminal(order, live_system)
    assert saga.state == SagaState.COMPLETED, _describe(order)

    payment = Payment.objects.get(order_id=order.pk)
    reservation = Reservation.objects.get(order_id=order.pk)
    shipment = Shipment.objects.get(order_id=order.pk)
    assert (payment.saga_id, payment.step) == (saga.pk, "charge_payment")
    assert (reservation.saga_id, reservation.step) == (saga.pk, "reserve_stock")
    assert (shipment.saga_id, shipment.step) == (saga.pk, "create_shipment")
    # What each step's on_reply takes from its reply, and nothing else.
    assert saga.data["payment_id"] == payment.pk
    assert saga.data["reservation_id"] == reservation.pk
    assert (saga.data["shipment_id"], saga.data["tracking_number"]) == (shipment.pk, shipment.tracking_number)
    assert "order_status" not in saga.data
