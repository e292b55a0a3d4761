"""Stock reservations on PostgreSQL: idempotent, never negative, no overselling under races."""

import threading

import pytest
from django.db import IntegrityError, connection, transaction

from inventory.models import Reservation, StockLevel, StockMovement
from inventory.services import (
    MAX_UNITS,
    LineRequest,
    OutOfStock,
    product_upsert,
    stock_receive,
    stock_release,
    stock_reserve,
)


@pytest.fixture
def product(db):
    product = product_upsert(sku="SKU-L", name="Last one", price_amount=100)
    stock_receive(product=product, quantity=1)
    return product


@pytest.mark.django_db(transaction=True)
def test_concurrent_orders_for_the_last_unit_exactly_one_wins():
    product = product_upsert(sku="SKU-L", name="Last one", price_amount=100)
    stock_receive(product=product, quantity=1)
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def reserve(order_id: int) -> None:
        try:
            barrier.wait()
            with transaction.atomic():
                stock_reserve(order_id=order_id, idempotency_key=f"k{order_id}", lines=[LineRequest("SKU-L", 1)])
            outcomes.append("won")
        except OutOfStock:
            outcomes.append("out of stock")
        finally:
            connection.close()

    threads = [threading.Thread(target=reserve, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["out of stock"] * 7 + ["won"]
    level = StockLevel.objects.get(product=product)
    assert (level.on_hand, level.reserved) == (1, 1)
    assert Reservation.objects.count() == 1


def test_same_key_reserves_once(product):
    first = stock_reserve(order_id=1, idempotency_key="k1", lines=[LineRequest("SKU-L", 1)])
    again = stock_reserve(order_id=1, idempotency_key="k1", lines=[LineRequest("SKU-L", 1)])
    assert first.pk == again.pk
    assert StockLevel.objects.get(product=product).reserved == 1


def test_release_is_a_new_movement_and_is_idempotent(product):
    stock_reserve(order_id=1, idempotency_key="k1", lines=[LineRequest("SKU-L", 1)])
    stock_release(order_id=1, reservation_key="k1", idempotency_key="k1:compensate")
    stock_release(order_id=1, reservation_key="k1", idempotency_key="k1:compensate")
    assert list(StockMovement.objects.filter(product=product).values_list("kind", flat=True)) == [
        "receipt",
        "reserve",
        "release",
    ]
    assert StockLevel.objects.get(product=product).reserved == 0


def test_release_before_reserve_leaves_a_tombstone_that_blocks_a_late_reserve(product):
    stock_release(order_id=1, reservation_key="k1", idempotency_key="k1:compensate")
    late = stock_reserve(order_id=1, idempotency_key="k1", lines=[LineRequest("SKU-L", 1)])
    assert late.status == Reservation.Status.RELEASED
    assert StockLevel.objects.get(product=product).reserved == 0


def test_database_refuses_negative_available_stock(product):
    with pytest.raises(IntegrityError), transaction.atomic():
        StockLevel.objects.filter(product=product).update(reserved=2)


def test_stock_movements_are_append_only(product):
    movement = StockMovement.objects.get(product=product)
    with pytest.raises(Exception, match="append-only"), transaction.atomic():
        StockMovement.objects.filter(pk=movement.pk).update(quantity=5)
    with pytest.raises(Exception, match="append-only"), transaction.atomic():
        movement.delete()


def test_a_receipt_past_what_the_stock_level_can_hold_is_refused_and_changes_nothing(product):
    stock_receive(product=product, quantity=MAX_UNITS - 1)  # exactly full
    with pytest.raises(ValueError, match="more than"):
        stock_receive(product=product, quantity=1)
    assert StockLevel.objects.get(product=product).on_hand == MAX_UNITS
    assert StockMovement.objects.filter(product=product).count() == 2
