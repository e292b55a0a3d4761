"""Orders driven through their real saga in the test process, to give the auditor consistent
states to start from. Messages are handled synchronously by testing.pump (in a ``db``
test, on_commit callbacks never run, so nothing else would deliver them)."""

from inventory.models import Product
from inventory.services import product_upsert, stock_receive
from orders.models import Order
from orders.services import Customer, LineInput, order_place, order_request_cancel
from sagas.models import SagaInstance
from testing.pump import pump

ADDRESS = {"line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE"}
STOCK = 10


def catalog() -> Product:
    product = product_upsert(sku="SKU-A", name="Grinder", price_amount=4500)
    stock_receive(product=product, quantity=STOCK)
    return product


def place(*, token: str = "tok_visa", quantity: int = 1, country: str = "DE", sku: str = "SKU-A") -> Order:
    """An order whose saga has started and waits for its first command to be handled."""
    return order_place(
        customer=Customer(email="ann@example.com", name="Ann Smith"),
        lines=[LineInput(sku=sku, quantity=quantity)],
        payment_token=token,
        shipping_address={**ADDRESS, "country": country},
    ).order


def settle(order: Order) -> Order:
    pump()
    order.refresh_from_db()
    return order


def confirmed(*, quantity: int = 1) -> Order:
    order = settle(place(quantity=quantity))
    assert order.status == Order.Status.CONFIRMED
    return order


def declined() -> Order:
    """Cancelled before anything was charged or reserved."""
    order = settle(place(token="tok_chargeDeclined"))
    assert order.status == Order.Status.CANCELLED
    return order


def out_of_stock() -> Order:
    """Charged, then refunded: nothing to reserve."""
    order = settle(place(quantity=STOCK + 1))
    assert order.status == Order.Status.CANCELLED
    return order


def address_rejected() -> Order:
    """Charged and reserved, then released and refunded: the carrier refused the address."""
    order = settle(place(country="AQ"))
    assert order.status == Order.Status.CANCELLED
    return order


def cancelled_after_shipment() -> Order:
    """Cancelled by the customer while the shipment was being created: every step was
    undone, the shipment included."""
    order = place()
    pump(skip={"create_shipment"})
    order_request_cancel(order=order, reason="customer changed their mind")
    order = settle(order)
    assert order.status == Order.Status.CANCELLED
    return order


def saga_of(order: Order) -> SagaInstance:
    return SagaInstance.objects.get(pk=order.saga_id)
