"""An order's representation is built without a serializer (order_representation) and
documented by one (OrderDetailSerializer): the two agree for orders in every state, and the
representation of an order just placed, built from what its transaction wrote, is the one a
read of the order gives."""

import json
import threading

import pytest
from django.db import connection, transaction
from django.utils import timezone

from inventory.services import product_upsert
from orders.api.serializers import OrderDetailSerializer, order_representation
from orders.models import Order, OrderLine
from orders.selectors import order_detail, read_snapshot
from orders.services import Customer, LineInput, order_place
from outbox.models import OutboxMessage
from sagas.models import SagaInstance, SagaStep
from testing import scenarios

pytestmark = pytest.mark.django_db


def _as_serializer_renders(order: Order) -> dict:
    return json.loads(json.dumps(OrderDetailSerializer(order_detail(order=order)).data))


@pytest.mark.parametrize(
    "scenario",
    ["place", "confirmed", "declined", "out_of_stock", "address_rejected", "cancelled_after_shipment"],
)
def test_the_representation_is_what_the_documented_serializer_gives(scenario):
    scenarios.catalog()
    order = getattr(scenarios, scenario)()
    representation = order_representation(order_detail(order=order))
    assert representation == _as_serializer_renders(order)
    assert representation["saga"]["timeline"], "the timeline is compared too"


def test_an_address_without_its_optional_line_is_shown_without_it():
    scenarios.catalog()
    order = scenarios.place()
    assert "line2" not in order.shipping_address
    Order.objects.filter(pk=order.pk).update(shipping_address={**order.shipping_address, "line2": "Floor 3"})
    order.refresh_from_db()
    representation = order_representation(order_detail(order=order))
    assert representation["shipping_address"]["line2"] == "Floor 3"
    assert representation == _as_serializer_renders(order)


def test_an_order_just_placed_is_shown_from_what_was_written_as_a_read_shows_it(django_assert_num_queries):
    scenarios.catalog()
    with transaction.atomic():
        placement = order_place(
            customer=Customer(email="ann@example.com", name="Ann Smith"),
            lines=[LineInput(sku="SKU-A", quantity=2)],
            payment_token="tok_visa",
            shipping_address=dict(scenarios.ADDRESS),
        )
        with django_assert_num_queries(0):
            placed = order_representation(order_detail(order=placement.order, placed_saga=placement.saga))
    order = Order.objects.get(pk=placement.order.pk)
    assert placed == _as_serializer_renders(order)
    assert placed["lines"][0]["quantity"] == 2
    # Compared above with the rows as read back: the send time is the database's own.
    assert [(step["step"], step["outcome"]) for step in placed["saga"]["timeline"]] == [("charge_payment", "pending")]


def test_an_order_placed_holds_in_memory_what_its_rows_hold():
    scenarios.catalog()
    product_upsert(sku="SKU-B", name="Kettle", price_amount=1200)
    with transaction.atomic():
        placement = order_place(
            customer=Customer(email="ann@example.com", name="Ann Smith"),
            lines=[LineInput(sku="SKU-B", quantity=3), LineInput(sku="SKU-A", quantity=1)],
            payment_token="tok_visa",
            shipping_address=dict(scenarios.ADDRESS),
        )
    placed, saga = placement.order, placement.saga

    def columns(instance):
        return {field.attname: getattr(instance, field.attname) for field in instance._meta.concrete_fields}

    assert columns(placed) == columns(Order.objects.get(pk=placed.pk))
    assert [columns(line) for line in placed.lines.all()] == [
        columns(line) for line in OrderLine.objects.filter(order_id=placed.pk).order_by("id")
    ]
    assert [line.sku for line in placed.lines.all()] == ["SKU-B", "SKU-A"]
    assert placed.total_amount == 3 * 1200 + 4500
    assert columns(saga) == columns(SagaInstance.objects.get(pk=saga.pk))
    assert [columns(step) for step in saga.steps.all()] == [
        columns(step) for step in SagaStep.objects.filter(saga_id=saga.pk)
    ]


@pytest.mark.django_db(transaction=True)
def test_an_order_is_read_in_one_snapshot_whatever_commits_meanwhile():
    scenarios.catalog()
    with transaction.atomic():
        order = scenarios.place()
        # Its first command goes nowhere: no worker gets to touch this saga.
        OutboxMessage.objects.update(published_at=timezone.now())

    def finish_elsewhere() -> None:
        # Another connection cancels the order and finishes its saga while the reads run.
        try:
            with transaction.atomic():
                Order.objects.filter(pk=order.pk).update(status=Order.Status.CANCELLED)
                SagaInstance.objects.filter(pk=order.saga_id).update(state="compensated")
        finally:
            connection.close()

    with read_snapshot():
        seen = Order.objects.get(pk=order.pk)
        worker = threading.Thread(target=finish_elsewhere)
        worker.start()
        worker.join()
        detail = order_detail(order=seen)
    assert (detail.status, detail.saga.state) == ("pending", "running"), "both as they were when the reads began"
    with read_snapshot():
        detail = order_detail(order=Order.objects.get(pk=order.pk))
    assert (detail.status, detail.saga.state) == ("cancelled", "compensated")
