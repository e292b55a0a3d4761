"""Delivery guarantees of the outbox, relay and inbox, on real PostgreSQL, a real broker (Redis;
the ones marked, RabbitMQ too) and a real worker process."""

import threading
import uuid

import pytest
from django.db import connection, transaction

from common.faults import faults_set
from conftest import wait_for
from inventory.models import Reservation, StockLevel
from inventory.services import product_upsert, stock_receive
from outbox.exceptions import OutsideTransaction
from outbox.models import DeadLetter, InboxMessage, OutboxMessage
from outbox.publishing import publish
from outbox.relay import relay_batch, relay_drain
from outbox.services import dead_letter_replay
from outbox.signing import signed
from payments.models import GatewayCharge, Payment
from sagas import keys

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def _reserve_command(order_id: int, sku: str = "SKU-T", quantity: int = 1, saga_id: str | None = None) -> OutboxMessage:
    saga_id = saga_id or str(uuid.uuid4())
    return publish(
        type="reserve_stock",
        destination="inventory",
        payload={"order_id": order_id, "lines": [{"sku": sku, "quantity": quantity}]},
        aggregate="saga",
        aggregate_id=saga_id,
        correlation_id=saga_id,
        headers={
            "saga_id": saga_id,
            "step": "reserve_stock",
            "phase": "forward",
            "attempt": 1,
            "idempotency_key": keys.step_key(saga_id, "reserve_stock"),
        },
    )


def _charge_command(order_id: int, saga_id: str, amount: int = 500, step_key: str | None = None) -> OutboxMessage:
    return publish(
        type="charge_payment",
        destination="payments",
        payload={"order_id": order_id, "amount": amount, "currency": "EUR", "token": "tok_visa"},
        aggregate="saga",
        aggregate_id=step_key or saga_id,
        correlation_id=saga_id,
        headers={
            "saga_id": saga_id,
            "step": "charge_payment",
            "phase": "forward",
            "attempt": 1,
            "idempotency_key": keys.step_key(step_key or saga_id, "charge_payment"),
        },
    )


def _stock(on_hand: int = 10, sku: str = "SKU-T"):
    product = product_upsert(sku=sku, name="test product", price_amount=100)
    stock_receive(product=product, quantity=on_hand)
    return product


def _available(product) -> int:
    level = StockLevel.objects.get(product=product)
    return level.on_hand - level.reserved


def test_publish_outside_a_transaction_is_refused(live_system):
    with pytest.raises(OutsideTransaction):
        publish(type="ping", destination="default", payload={}, aggregate="test", aggregate_id=1)


def test_rolled_back_transaction_delivers_nothing(live_system):
    product = _stock(10)
    with pytest.raises(RuntimeError), transaction.atomic():
        _reserve_command(order_id=1)
        raise RuntimeError("the business change failed")
    relay_drain()
    assert OutboxMessage.objects.count() == 0
    # Give the worker time to handle anything that could have slipped through.
    with transaction.atomic():
        marker = publish(type="ping", destination="default", payload={}, aggregate="test", aggregate_id=1)
    wait_for(lambda: InboxMessage.objects.filter(message_id=marker.message_id).exists())
    assert _available(product) == 10
    assert not Reservation.objects.exists()


@pytest.mark.brokers("redis", "rabbitmq")
def test_message_delivered_three_times_changes_state_once(live_system):
    product = _stock(10)
    with transaction.atomic():
        message = _reserve_command(order_id=7)
    wait_for(lambda: OutboxMessage.objects.filter(pk=message.pk, published_at__isnull=False).exists())
    for _ in range(2):  # the relay sends it again, as after a crash between send and mark
        OutboxMessage.objects.filter(pk=message.pk).update(published_at=None)
        relay_drain()
    wait_for(lambda: InboxMessage.objects.filter(consumer="inventory", message_id=message.message_id).exists())
    wait_for(lambda: _delivered_count(message) >= 3, timeout=10)
    assert _available(product) == 9
    assert Reservation.objects.filter(order_id=7).count() == 1


def _delivered_count(message: OutboxMessage) -> int:
    message.refresh_from_db()
    return message.attempts


@pytest.mark.brokers("redis", "rabbitmq")
def test_relay_crash_between_send_and_mark_resends_and_effect_happens_once(live_system):
    product = _stock(10)
    with transaction.atomic():
        message = _reserve_command(order_id=8)
    # Everything published, the reservation's event too: no relay of the worker's runs beside this one.
    wait_for(lambda: not OutboxMessage.objects.filter(published_at__isnull=True).exists())

    def crash() -> None:
        raise SystemExit("relay killed after send")

    OutboxMessage.objects.filter(pk=message.pk).update(published_at=None)
    with pytest.raises(SystemExit):
        relay_batch(after_send=crash)
    assert OutboxMessage.objects.get(pk=message.pk).published_at is None  # the mark was lost
    assert relay_drain() >= 1  # so it is sent again
    wait_for(lambda: InboxMessage.objects.filter(consumer="inventory", message_id=message.message_id).exists())
    wait_for(lambda: DeadLetter.objects.exists() or _reply_count(message) >= 1)
    assert _available(product) == 9
    assert Reservation.objects.filter(order_id=8).count() == 1
    assert not DeadLetter.objects.exists()


def _reply_count(message: OutboxMessage) -> int:
    return OutboxMessage.objects.filter(causation_id=str(message.message_id), type="saga_reply").count()


@pytest.mark.brokers("redis", "rabbitmq")
def test_two_relays_drain_5000_messages_each_handled_exactly_once(live_system):
    from common.redis import get_redis
    from outbox.nudge import NUDGE_KEY

    get_redis().set(NUDGE_KEY, "1", px=120_000)  # keep the nudged relay out: the two below race
    with transaction.atomic():
        OutboxMessage.objects.bulk_create(
            OutboxMessage(type="ping", destination="default", aggregate="bench", aggregate_id=str(i), payload={})
            for i in range(5000)
        )
    sent: list[int] = []

    def run_relay() -> None:
        try:
            while True:
                count = relay_batch(batch_size=200)
                sent.append(count)
                if count == 0:
                    return
        finally:
            connection.close()

    threads = [threading.Thread(target=run_relay) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sum(sent) == 5000, "each message is claimed and sent by exactly one relay"
    assert not OutboxMessage.objects.filter(published_at__isnull=True).exists()
    wait_for(lambda: InboxMessage.objects.filter(consumer="default").count() >= 5000, timeout=120)
    assert InboxMessage.objects.filter(consumer="default").count() == 5000
    assert not DeadLetter.objects.exists()


@pytest.mark.brokers("redis", "rabbitmq")
def test_worker_killed_mid_handler_message_redelivered_and_handled_once(live_system):
    faults_set(provider_latency_ms=3000)  # the gateway call takes 3 s: time to kill the worker
    saga_id = str(uuid.uuid4())
    with transaction.atomic():
        message = _charge_command(99, saga_id, amount=1299)
    wait_for(lambda: OutboxMessage.objects.filter(pk=message.pk, published_at__isnull=False).exists())
    wait_for(lambda: live_system.queues.unacknowledged() > 0, message="the worker never picked the message up")
    import time

    time.sleep(0.5)
    killed = live_system.kill_children()
    assert killed
    faults_set()
    wait_for(lambda: Payment.objects.filter(order_id=99).exists(), timeout=60, message=live_system.tail())
    wait_for(lambda: _reply_count(message) >= 1, timeout=10)
    assert Payment.objects.filter(order_id=99).count() == 1
    assert GatewayCharge.objects.filter(idempotency_key__endswith=keys.step_key(saga_id, "charge_payment")).count() == 1
    assert InboxMessage.objects.filter(consumer="payments", message_id=message.message_id).count() == 1
    assert _reply_count(message) == 1


def test_transient_failure_retried_then_dead_letter_then_replay_succeeds(live_system):
    saga_id = str(uuid.uuid4())
    faults_set(gateway_transient=1.0)  # the gateway is down
    with transaction.atomic():
        message = _charge_command(5, saga_id, amount=500)
    wait_for(lambda: DeadLetter.objects.filter(message_id=str(message.message_id)).exists(), timeout=30)
    dead = DeadLetter.objects.get(message_id=str(message.message_id))
    assert dead.attempts == 3  # OUTBOX_MAX_ATTEMPTS in the test settings
    assert "GatewayUnavailable" in dead.reason and "503" in dead.reason
    assert "Traceback" in dead.traceback
    assert not Payment.objects.filter(order_id=5).exists()

    faults_set()  # the cause is fixed
    dead_letter_replay(dead_letter=dead)
    wait_for(lambda: Payment.objects.filter(order_id=5).exists(), timeout=20)
    assert Payment.objects.filter(order_id=5).count() == 1
    dead.refresh_from_db()
    assert dead.status == DeadLetter.Status.REPLAYED


@pytest.mark.brokers("redis", "rabbitmq")
def test_transient_failure_succeeds_on_retry(live_system):
    saga_id = str(uuid.uuid4())
    faults_set(gateway_transient=0.5)
    with transaction.atomic():
        for order_id in range(100, 110):
            _charge_command(order_id, saga_id, step_key=f"{saga_id}-{order_id}")
    wait_for(lambda: Payment.objects.count() + DeadLetter.objects.count() >= 10, timeout=30)
    handled = Payment.objects.count()
    assert handled >= 5, "with half the calls failing, most messages succeed within 3 attempts"
    assert GatewayCharge.objects.count() == handled  # a failed call charged nothing


def test_poison_message_becomes_dead_letter_and_next_message_is_handled(live_system):
    from config.celery import app

    app.send_task("outbox.consume", args=[signed({"not": "an envelope"})], queue="inventory")
    app.send_task(
        "outbox.consume",
        args=[
            signed(
                {"message_id": str(uuid.uuid4()), "type": "reserve_stock", "destination": "inventory", "payload": {}}
            )
        ],
        queue="inventory",
    )
    with transaction.atomic():
        marker = publish(type="ping", destination="default", payload={}, aggregate="test", aggregate_id=1)
    wait_for(lambda: DeadLetter.objects.count() >= 2, timeout=20)
    reasons = sorted(DeadLetter.objects.values_list("reason", flat=True))
    assert any("lacks message_id" in reason for reason in reasons)
    assert any("missing field" in reason or "saga headers" in reason for reason in reasons)
    assert all(DeadLetter.objects.values_list("poison", flat=True))
    wait_for(lambda: InboxMessage.objects.filter(message_id=marker.message_id).exists())
