"""The analytics consumer on the real stream: exactly once per event, across duplicates,
crashes and rebuilds, and its figures equal to what the source contexts' tables say."""

import random
import time

import pytest
from django.core.management import call_command
from django.db import transaction

from analytics import selectors
from analytics.consumer import rebuild
from analytics.models import DailySales, FoldedEvent, Generation
from analytics.services import analytics_clear, fold, generation_active_or_start
from analytics.tests.conftest import wait_caught_up
from analytics.tests.source_figures import comparable, source_figures
from common.faults import faults_set
from devtools.processes import wait_for
from inventory.services import product_upsert, stock_receive
from orders.exceptions import OrderNotCancellable
from orders.models import Order
from orders.services import Customer, LineInput, order_place, order_request_cancel
from outbox.models import OutboxMessage
from outbox.relay import relay_drain
from outbox.stream import StreamRecord
from sagas.models import SagaInstance, SagaState
from testing import scenarios

ADDRESS = {"line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE"}
TERMINAL = (SagaState.COMPLETED, SagaState.COMPENSATED, SagaState.FAILED)


def read_all(stream) -> list[StreamRecord]:
    reader = stream.reader(start="first")
    try:
        records = []
        for batch in reader.batches(max_batch=10_000, max_wait=1.0, idle=0.3):
            if not batch:
                return records
            records += batch
    finally:
        reader.close()


def settled(count: int) -> None:
    wait_for(lambda: SagaInstance.objects.filter(state__in=TERMINAL).count() == count, timeout=120)
    wait_for(lambda: not OutboxMessage.objects.filter(published_at__isnull=True).exists(), timeout=60)


@pytest.mark.django_db(transaction=True)
def test_a_duplicated_event_on_the_stream_changes_nothing(stream):
    scenarios.catalog()
    with transaction.atomic():
        scenarios.place()
    relay_drain()
    [placed] = [r.envelope() for r in read_all(stream) if r.envelope()["type"] == "order.placed"]
    stream.publish([{k: v for k, v in placed.items() if k != "signature"}])  # the same event again
    records = [r for r in read_all(stream) if r.envelope()["message_id"] == placed["message_id"]]
    assert len(records) == 2 and records[0].offset < records[1].offset
    generation = generation_active_or_start(stream=stream.name)
    first = fold(generation.pk, records[:1])
    second = fold(generation.pk, records)  # a redelivery of the first as well: before the position
    assert (first.folded, second.folded, second.duplicates, second.skipped) == (1, 0, 1, 0)
    sales = DailySales.objects.get(generation=generation)
    assert (sales.orders_placed, sales.currency) == (1, "EUR")
    assert FoldedEvent.objects.filter(generation=generation).count() == 1
    generation.refresh_from_db()
    assert (generation.next_offset, generation.events_folded, generation.duplicates_ignored) == (
        records[1].offset + 1,
        1,
        1,
    )
    assert [row["orders_placed"] for row in selectors.sales_per_day()] == [1]


@pytest.mark.django_db(transaction=True)
def test_a_forged_event_is_rejected_and_counted(stream):
    generation = generation_active_or_start(stream=stream.name)
    forged = b'{"message_id": "5b0f6c1e-0d7a-4a57-9bd7-3f1c2b6e8a90", "type": "order.placed", "payload": {}}'
    result = fold(generation.pk, [StreamRecord(offset=0, body=forged), StreamRecord(offset=1, body=b"not json")])
    assert (result.folded, result.rejected) == (0, 2)
    generation.refresh_from_db()
    assert (generation.next_offset, generation.events_rejected) == (2, 2)
    assert not DailySales.objects.exists()


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_consumer_killed_mid_batch_resumes_from_its_offset_without_counting_twice(
    live_system, stream, analytics_consumer
):
    scenarios.catalog()
    stock_receive(product=product_upsert(sku="SKU-A", name="Grinder", price_amount=4500), quantity=40)
    for _ in range(10):
        with transaction.atomic():
            scenarios.place()
    settled(10)
    tail = stream.tail()
    assert tail is not None and tail + 1 == 50  # five events per confirmed order
    faults_set(analytics_fold_pause_ms=600)  # every batch waits inside its transaction
    analytics_consumer.batch_size = 5
    analytics_consumer.start()
    wait_for(lambda: Generation.objects.filter(status="active", next_offset__gt=0).exists(), timeout=30, interval=0.02)
    first_commit = Generation.objects.get(status="active").next_offset
    time.sleep(0.3)  # inside the next batch's transaction, folded and not committed
    analytics_consumer.kill()
    generation = Generation.objects.get(status="active")
    assert generation.next_offset == first_commit == 5  # the killed batch left nothing behind
    assert FoldedEvent.objects.filter(generation=generation).count() == 5
    faults_set(analytics_fold_pause_ms=0)
    analytics_consumer.start()
    wait_caught_up(stream)
    generation.refresh_from_db()
    assert generation.events_folded == 50 == FoldedEvent.objects.filter(generation=generation).count()
    [sales] = selectors.sales_per_day()
    assert (sales["orders_placed"], sales["orders_confirmed"], sales["captured_amount"]) == (10, 10, 10 * 4500)
    assert comparable(selectors.figures()) == comparable(source_figures())


def _place_many(count: int, seed: int = 7) -> None:
    """Orders of every outcome: confirmed, declined, out of stock (refunded), address refused
    (released and refunded), cancelled by the customer; in two currencies."""
    rng = random.Random(seed)
    product_upsert(sku="SKU-A", name="Grinder", price_amount=4500)
    product_upsert(sku="SKU-B", name="Filter", price_amount=799)
    product_upsert(sku="SKU-U", name="Kettle", price_amount=3900, currency="USD")
    product_upsert(sku="SKU-S", name="Scarce", price_amount=12000)
    from inventory.models import Product

    for sku, quantity in (("SKU-A", 10_000), ("SKU-B", 10_000), ("SKU-U", 10_000), ("SKU-S", 5)):
        stock_receive(product=Product.objects.get(sku=sku), quantity=quantity)
    for index in range(count):
        roll = rng.random()
        token = "tok_chargeDeclined" if roll < 0.12 else "tok_visa"
        country = "AQ" if 0.12 <= roll < 0.22 else "DE"
        if roll > 0.9:
            lines = [LineInput(sku="SKU-U", quantity=rng.randint(1, 3))]
        elif 0.22 <= roll < 0.3:
            lines = [LineInput(sku="SKU-S", quantity=rng.randint(1, 3))]  # soon out of stock
        else:
            lines = [
                LineInput(sku="SKU-A", quantity=rng.randint(1, 2)),
                LineInput(sku="SKU-B", quantity=rng.randint(1, 4)),
            ]
        with transaction.atomic():
            order = order_place(
                customer=Customer(email=f"c{index}@example.com", name="Customer"),
                lines=lines,
                payment_token=token,
                shipping_address={**ADDRESS, "country": country},
            ).order
        if 0.3 <= roll < 0.36:
            try:
                order_request_cancel(order=order, reason="cancelled by the customer")
            except OrderNotCancellable:
                pass


@pytest.mark.worker
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_analytics_figures_equal_the_source_tables_and_again_after_a_rebuild(live_system, stream, analytics_consumer):
    count = 300
    analytics_consumer.start()
    _place_many(count)
    settled(count)
    wait_caught_up(stream)
    expected = comparable(source_figures())
    # Every kind of outcome is in there.
    assert expected["cancellations"] and len(expected["cancellations"]) >= 3
    assert sum(row["refunds"] for row in expected["sales"]) > 10
    assert {row["currency"] for row in expected["sales"]} == {"EUR", "USD"}
    assert Order.objects.filter(status=Order.Status.CONFIRMED).count() > count / 2
    assert comparable(selectors.figures()) == expected

    # Throw the read model away; rebuild it from the stream alone, with the live consumer running.
    analytics_clear()
    call_command("analytics_rebuild", "--batch-size", "200")
    assert Generation.objects.filter(status=Generation.Status.ACTIVE).count() == 1
    assert comparable(selectors.figures()) == expected

    # And again beside a live generation that keeps serving until the switch.
    before = Generation.objects.get(status=Generation.Status.ACTIVE)
    seen_while_building = []
    rebuild(batch_size=100, progress=lambda p: seen_while_building.append(selectors.active_generation().pk))
    assert seen_while_building[0] == before.pk  # the old one served while the new one was built
    after = Generation.objects.get(status=Generation.Status.ACTIVE)
    assert after.pk != before.pk and not Generation.objects.filter(pk=before.pk).exists()
    wait_caught_up(stream)
    assert comparable(selectors.figures()) == expected
