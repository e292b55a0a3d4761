"""Customer emails cannot be turned into a spam or phishing relay: no client text but a name
stripped of links and markup, and no email for an order that cost its placer nothing."""

import pytest
from django.core import mail

from orders.models import Notification, Order
from orders.notifications import NAME_MAX, greeting
from testing.pump import pump
from testing.storefront import order_body, place_order

pytestmark = pytest.mark.django_db

PHISHING = (
    'Your account is locked. Verify at https://evil.example/login <a href="https://evil.example">here</a> '
    "or www.evil.example, evil.example/reset, mail help@evil.example within 24h "
)


def _settle(shop, **body) -> Order:
    response = place_order(shop, order_body(**body))
    assert response.status_code == 202, response.content
    pump()
    return Order.objects.get(pk=response.json()["id"])


def test_a_confirmation_email_carries_no_link_markup_or_long_text_from_the_customer_name(shop, catalog):
    order = _settle(shop, customer={"email": "victim@example.com", "name": PHISHING[:200]})
    assert order.status == Order.Status.CONFIRMED
    (email,) = mail.outbox
    assert email.to == ["victim@example.com"]
    first_line = email.body.splitlines()[0]
    assert first_line.startswith("Hello ") and len(first_line) <= len("Hello ,") + NAME_MAX
    for forbidden in ("http", "://", "www", "evil", ".example", "@", "<", ">", "href", "24h"):
        assert forbidden not in email.body, forbidden


def test_a_name_keeps_what_reads_as_a_name():
    assert greeting("Ann Smith") == "Hello Ann Smith,"
    assert greeting("José O'Neil-Ávila") == "Hello José O'Neil-Ávila,"
    assert greeting("Dr. J. R. Tolkien") == "Hello Dr. J. R. Tolkien,"
    assert greeting("https://evil.example") == greeting("<b></b>") == greeting("") == "Hello,"


def test_a_declined_card_sends_no_cancellation_email(shop, catalog):
    order = _settle(shop, payment={"token": "tok_chargeDeclined"}, customer={"email": "x@example.com", "name": "X"})
    assert order.status == Order.Status.CANCELLED
    assert mail.outbox == [] and not Notification.objects.filter(order=order).exists()


def test_a_shop_that_asks_for_it_notifies_uncharged_cancellations(shop, catalog, settings):
    settings.NOTIFY_UNCHARGED_CANCELLATIONS = True
    order = _settle(shop, payment={"token": "tok_chargeDeclined"})
    assert order.status == Order.Status.CANCELLED
    (email,) = mail.outbox
    assert email.subject == f"Your order {order.pk} was cancelled"


def test_an_order_charged_then_cancelled_is_notified(shop, catalog):
    order = _settle(shop, lines=[{"sku": "SKU-1", "quantity": 1000}])  # charged, then out of stock
    assert order.status == Order.Status.CANCELLED and "stock" in order.cancel_reason
    (email,) = mail.outbox
    assert email.subject == f"Your order {order.pk} was cancelled"
    assert Notification.objects.filter(order=order, kind=Notification.Kind.CANCELLATION).count() == 1
