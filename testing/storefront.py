"""Helpers of the storefront API tests: token-authenticated clients, a small catalog, a valid
order body and the row counts that a rejected request must leave unchanged."""

import uuid
from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from rest_framework.test import APIClient

from common.redis import get_redis
from inventory.models import Product
from inventory.services import product_upsert, stock_receive
from orders.api.tokens import api_token_issue
from orders.idempotency import request_fingerprint
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
    key = api_token_issue(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    client.user = user
    client.token = key
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


def in_flight_key(client, key: str, body: dict, *, locked_ago: timedelta = timedelta()) -> IdempotencyKey:
    """A claim left by a request that is still running (or, if old, one that died)."""
    row = IdempotencyKey.objects.create(
        client=client.user,
        key=key,
        fingerprint=request_fingerprint(method="POST", path=ORDERS_URL, payload=body),
        method="POST",
        path=ORDERS_URL,
        lock_token=uuid.uuid4(),
    )
    IdempotencyKey.objects.filter(pk=row.pk).update(locked_at=timezone.now() - locked_ago)
    return row


def forget_throttle_counts(*clients: APIClient) -> None:
    redis = get_redis()
    for client in clients:
        for key in redis.scan_iter(f"throttle:storefront_client:{client.user.pk}:*"):
            redis.delete(key)
