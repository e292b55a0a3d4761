"""The cancellation notice tells the customer of a refund only when one was made: the auditor
holds every notice that says "refunded" against the gateway's refunds."""

import pytest
from django.core import mail

from orders.models import Notification
from orders.services import order_cancel
from testing.storefront import parked_order, stock_catalog

pytestmark = pytest.mark.django_db


@pytest.fixture
def order():
    stock_catalog()
    return parked_order(None)


def test_a_cancellation_with_a_refund_tells_the_amount_refunded(order):
    order_cancel(order_id=order.pk, reason="out of stock", refunded_amount=2598)

    notice = Notification.objects.get(order=order, kind=Notification.Kind.CANCELLATION)
    assert "We refunded 25.98 EUR." in notice.body
    assert [message.body for message in mail.outbox] == [notice.body]


def test_a_cancellation_without_a_refund_says_nothing_about_money(order):
    order_cancel(order_id=order.pk, reason="card declined")

    notice = Notification.objects.get(order=order, kind=Notification.Kind.CANCELLATION)
    assert "was cancelled: card declined." in notice.body
    assert "refund" not in notice.body.lower() and "charged" not in notice.body.lower()
    assert [message.body for message in mail.outbox] == [notice.body]
