"""An order's representation is built without a serializer (order_representation) and
documented by one (OrderDetailSerializer): the two agree for orders in every state, and the
representation of an order just placed, built from what its transaction wrote, is the one a
read of the order gives."""

import json

import pytest
from django.db import transaction

from audit.tests import scenarios
from orders.api.serializers import OrderDetailSerializer, order_representation
from orders.models import Order
from orders.selectors import order_detail
from orders.services import Customer, LineInput, order_placement

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
        placement = order_placement(
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
