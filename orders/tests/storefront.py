"""Helpers of the storefront API tests: token-authenticated clients, a small catalog, a valid
order body and the row counts that a rejected request must leave unchanged."""

import uuid
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from inventory.models import Product
from inventory.services import product_upsert, stock_receive
from orders.models import IdempotencyKey, Order
from orders.services import Customer, LineInput, order_place
from outbox.models import OutboxMessage
from sagas.models import SagaInstance

ORDERS_URL = "/api/v1/orders/"
PRODUCTS_URL = "/api/v1/products/"


def order_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "customer": {"email": "ann@example.com", "name": "Ann Smith"},
        "lines": [{"sku": "SKU-1", "quantity": 2}],
        "payment": {"token": "tok_visa"},
        "shipping_address": {"line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE"},
    }
    body.update(changes)
    return body


def new_key() -> str:
    return str(uuid.uuid4())


def place_order(client: APIClient, body: Any = None, *, key: str | None = None) -> Any:
    return client.post(
        ORDERS_URL, body if body is not None else order_body(), format="json", HTTP_IDEMPOTENCY_KEY=key or new_key()
    )


def row_counts() -> dict[str, int]:
    """Everything an order placement writes: a request that fails must change none of it."""
    return {
        "orders": Order.objects.count(),
        "keys": IdempotencyKey.objects.count(),
        "sagas": SagaInstance.objects.count(),
        "outbox": OutboxMessage.objects.count(),
    }


def make_api_client(name: str) -> APIClient:
    user = get_user_model().objects.create_user(username=name)
    token = Token.objects.create(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    client.user = user
    client.token = token.key
    return client


def stock_catalog() -> dict[str, Product]:
    products = {
        "SKU-1": product_upsert(sku="SKU-1", name="Espresso cup", price_amount=1299),
        "SKU-2": product_upsert(sku="SKU-2", name="Grinder", price_amount=4500),
    }
    for product in products.values():
        stock_receive(product=product, quantity=50)
    return products


def parked_order(user: Any) -> Order:
    """A pending order whose saga never moves: its first command is deleted before it can be
    relayed, so a worker process running in the same test session leaves it alone."""
    body = order_body()
    with transaction.atomic():
        order = order_place(
            customer=Customer(**body["customer"]),
            lines=[LineInput(**line) for line in body["lines"]],
            payment_token=body["payment"]["token"],
            shipping_address=body["shipping_address"],
            client=user,
        ).order
        OutboxMessage.objects.filter(correlation_id=str(order.saga_id)).delete()
    return order
