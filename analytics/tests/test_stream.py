"""Integration events on the real RabbitMQ stream: written with the change that causes them,
published by the relay with confirms, in order per order."""

import json
import threading
import time
import uuid
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from devtools.processes import wait_for
from orders.models import Order
from outbox.models import OutboxMessage
from outbox.relay import relay_drain, relay_stream_batch
from outbox.signing import is_authentic
from outbox.stream import STREAM_DESTINATION, RabbitMQStream
from sagas.models import SagaInstance, SagaState
from testing import scenarios


def stream_events(stream: RabbitMQStream) -> list[dict]:
    """Every event on the stream, first copies only (a relay may publish one twice)."""
    reader = stream.reader(start="first")
    try:
        events = []
        for batch in reader.batches(max_batch=10_000, max_wait=1.0, idle=0.3):
            if not batch:
                break
            events += [record.envelope() for record in batch]
        first = {}
        for event in events:
            first.setdefault(event["message_id"], event)
        return list(first.values())
    finally:
        reader.close()


@pytest.mark.django_db(transaction=True)
def test_an_event_is_on_the_stream_only_if_its_transaction_committed(stream):
    scenarios.catalog()
    kept = scenarios.place()
    with pytest.raises(RuntimeError), transaction.atomic():
        rolled_back = scenarios.place()
        raise RuntimeError("the order's transaction fails after the order was written")
    relay_drain()
    events = stream_events(stream)
    placed = [event for event in events if event["type"] == "order.placed"]
    assert [event["payload"]["order_id"] for event in placed] == [kept.pk]
    assert not Order.objects.filter(pk=rolled_back.pk).exists()
    assert not any(event["payload"].get("order_id") == rolled_back.pk for event in events)
    event = placed[0]
    assert is_authentic(event)
    assert event["headers"]["version"] == 1
    assert event["payload"]["total_amount"] == 4500 and event["payload"]["currency"] == "EUR"
    assert event["payload"]["lines"] == [{"sku": "SKU-A", "name": "Grinder", "quantity": 1, "unit_price_amount": 4500}]
    assert event["correlation_id"] == "" or event["correlation_id"]  # placed by a request, not a message
    assert event["aggregate"] == "order" and event["aggregate_id"] == str(kept.pk)


@pytest.mark.django_db
def test_a_stream_that_is_down_holds_back_events_only(stream, settings):
    """Commands go on while the stream cannot be reached; the events wait, in order, and go out
    when it is back. (In the test's transaction, which no other process sees.)"""
    scenarios.catalog()
    settings.EVENT_STREAM_URL = "amqp://guest:guest@127.0.0.1:1//"  # nothing listens there
    order = scenarios.place()
    # Due at the test transaction's now(), which is its start.
    OutboxMessage.objects.update(available_at=timezone.now() - timedelta(hours=1))
    assert relay_drain() == 1  # the saga's first command went out
    command = OutboxMessage.objects.get(type="charge_payment")
    assert command.published_at is not None
    assert OutboxMessage.objects.filter(destination=STREAM_DESTINATION, published_at__isnull=True).count() == 1
    settings.EVENT_STREAM_URL = "amqp://guest:guest@127.0.0.1:5672//"
    from outbox import relay

    relay._stream_backoff.update(until=0.0, seconds=0.0)
    assert relay_stream_batch() == 1
    assert [e["payload"]["order_id"] for e in stream_events(stream) if e["type"] == "order.placed"] == [order.pk]


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_events_of_one_order_arrive_in_the_order_they_happened(live_system, stream):
    scenarios.catalog()
    confirmed = scenarios.place()
    rejected = scenarios.place(country="AQ")  # charged, reserved, then released and refunded
    declined = scenarios.place(token="tok_chargeDeclined")
    terminal = (SagaState.COMPLETED, SagaState.COMPENSATED)
    wait_for(lambda: SagaInstance.objects.filter(state__in=terminal).count() == 3, timeout=60)
    wait_for(lambda: not OutboxMessage.objects.filter(published_at__isnull=True).exists(), timeout=30)
    events = stream_events(stream)
    by_order: dict[int, list[str]] = {}
    for event in events:
        by_order.setdefault(event["payload"]["order_id"], []).append(event["type"])
    assert by_order[confirmed.pk] == [
        "order.placed",
        "payment.captured",
        "stock.reserved",
        "shipment.created",
        "order.confirmed",
    ]
    assert by_order[rejected.pk] == [
        "order.placed",
        "payment.captured",
        "stock.reserved",
        "stock.released",
        "payment.refunded",
        "order.cancelled",
    ]
    assert by_order[declined.pk] == ["order.placed", "order.cancelled"]
    cancelled = next(e for e in events if e["type"] == "order.cancelled" and e["payload"]["order_id"] == declined.pk)
    assert "declined" in cancelled["payload"]["reason"]
    # Each event names the saga, and the message that caused it.
    refund = next(e for e in events if e["type"] == "payment.refunded")
    assert refund["payload"]["saga_id"] == str(rejected.saga_id) == refund["correlation_id"]
    assert refund["causation_id"] and refund["traceparent"]
    assert len({e["message_id"] for e in events}) == len(events)
    assert all(uuid.UUID(e["message_id"]) for e in events)
    assert json.loads(json.dumps(events)) == events


@pytest.mark.django_db
def test_a_reader_starts_from_the_first_event_from_an_offset_or_from_a_time(stream):
    stream.publish([_envelope(n) for n in range(3)])
    time.sleep(1.5)  # RabbitMQ keeps a time per chunk: the next publication is a later chunk
    between = timezone.now()
    time.sleep(0.5)
    stream.publish([_envelope(n) for n in range(3, 5)])

    def order_ids(start) -> list[int]:
        reader = stream.reader(start=start)
        try:
            for batch in reader.batches(max_batch=100, max_wait=1.0, idle=0.3):
                return [record.envelope()["payload"]["order_id"] for record in batch]
        finally:
            reader.close()

    assert order_ids("first") == [0, 1, 2, 3, 4]
    assert order_ids(2) == [2, 3, 4]  # a stored position: the offset of the next event to read
    assert order_ids(between) == [3, 4]
    assert stream.tail() == 4


@pytest.mark.django_db
def test_the_tail_is_found_while_events_keep_coming(stream):
    """The consumer looks up the tail for its lag while the relay publishes: the look-up must
    not follow the events written meanwhile (it did, and the consumer stalled until they stopped)."""
    stop = threading.Event()
    publisher_stream = RabbitMQStream(stream.url, stream.name)  # a connection of its own
    stream_publish = publisher_stream.publish
    thread = threading.Thread(target=lambda: _publish_until(stop, stream_publish), daemon=True)
    thread.start()
    try:
        time.sleep(0.5)
        began = time.monotonic()
        first = stream.tail()
        second = stream.tail()
        took = time.monotonic() - began
    finally:
        stop.set()
        thread.join(10)
        publisher_stream.close()
    assert first is not None and second >= first
    assert took < 2.0, f"two look-ups of the tail took {took:.1f} s"


def _publish_until(stop: threading.Event, publish, *, at_most: float = 6.0) -> None:
    n = 0
    deadline = time.monotonic() + at_most
    while not stop.is_set() and time.monotonic() < deadline:
        publish([_envelope(n)])
        n += 1
        time.sleep(0.005)


def _envelope(n: int) -> dict:
    return {
        "message_id": str(uuid.uuid4()),
        "type": "order.confirmed",
        "destination": STREAM_DESTINATION,
        "aggregate": "order",
        "aggregate_id": str(n),
        "correlation_id": "",
        "causation_id": "",
        "traceparent": "",
        "created_at": timezone.now().isoformat(),
        "payload": {"order_id": n, "saga_id": "", "occurred_at": timezone.now().isoformat()},
        "headers": {"version": 1},
    }
