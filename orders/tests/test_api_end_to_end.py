"""Orders placed and cancelled through the API, carried out by the real worker process (relay,
broker, every context and the saga orchestrator), watched the way a storefront would: by
polling GET /api/v1/orders/{id}/."""

import time
from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from common.faults import faults_set
from testing.storefront import ORDERS_URL, make_api_client, order_body, place_order, stock_catalog

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def _poll(client: APIClient, order_id: int, until: Callable[[dict], bool], worker, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = client.get(f"{ORDERS_URL}{order_id}/").json()
        if until(body):
            return body
        time.sleep(0.2)
    raise AssertionError(f"order {order_id} never got there; last seen:\n{body}\n{worker.tail(20)}")


def _finished(body: dict) -> bool:
    return body["saga"]["state"] in ("completed", "compensated", "failed")


def _timeline(body: dict) -> list[tuple[str, str, str]]:
    return [(step["step"], step["phase"], step["outcome"]) for step in body["saga"]["timeline"]]


def test_order_placed_through_the_api_ends_confirmed_charged_reserved_and_shipped(live_system):
    stock_catalog()
    client = make_api_client("shop-e2e")
    created = place_order(client)
    assert created.status_code == 202
    body = _poll(client, created.json()["id"], _finished, live_system)

    assert body["status"] == "confirmed"
    assert body["cancel_reason"] == ""
    assert body["payment"] == {
        "status": "charged",
        "amount_charged": {"amount": 2598, "currency": "EUR"},
        "amount_refunded": {"amount": 0, "currency": "EUR"},
    }
    assert body["inventory"] == {"status": "reserved", "lines": [{"sku": "SKU-1", "quantity": 2}]}
    assert body["shipment"]["status"] == "created"
    assert body["shipment"]["tracking_number"].startswith("TRK")
    assert body["saga"]["state"] == "completed" and body["saga"]["current_step"] == ""
    assert body["saga"]["stuck"] is False
    assert _timeline(body) == [
        ("charge_payment", "forward", "success"),
        ("reserve_stock", "forward", "success"),
        ("create_shipment", "forward", "success"),
        ("confirm_order", "forward", "success"),
    ]
    assert all(step["replied_at"] >= step["sent_at"] for step in body["saga"]["timeline"])
    # Cancelling is now too late.
    refused = client.post(f"{ORDERS_URL}{body['id']}/cancel/")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "order_not_cancellable"


def test_declined_card_ends_cancelled_with_the_reason(live_system):
    stock_catalog()
    client = make_api_client("shop-e2e-declined")
    created = place_order(client, order_body(payment={"token": "tok_chargeDeclined"}))
    assert created.status_code == 202
    body = _poll(client, created.json()["id"], _finished, live_system)

    assert body["status"] == "cancelled"
    assert "declined" in body["cancel_reason"]
    assert body["payment"]["status"] == "none"
    assert body["payment"]["amount_charged"]["amount"] == 0
    assert body["inventory"]["status"] == "none"
    assert body["shipment"]["status"] == "none"
    assert body["saga"]["state"] == "compensated"
    assert "declined" in body["saga"]["failure_reason"]
    assert _timeline(body) == [
        ("charge_payment", "forward", "business_failure"),
        ("create_order", "compensation", "success"),
    ]
    again = client.post(f"{ORDERS_URL}{body['id']}/cancel/")
    assert again.status_code == 200, "cancelling a cancelled order is a no-op"


def test_cancel_through_the_api_while_the_card_is_charged_refunds_it(live_system):
    stock_catalog()
    client = make_api_client("shop-e2e-cancel")
    faults_set(provider_latency_ms=1500)  # the charge is in flight when the cancel arrives
    created = place_order(client)
    order_id = created.json()["id"]
    cancelling = client.post(f"{ORDERS_URL}{order_id}/cancel/")
    assert cancelling.status_code == 202
    faults_set()
    body = _poll(client, order_id, _finished, live_system)

    assert body["status"] == "cancelled", body
    assert body["cancel_reason"] == "cancelled by the customer"
    assert body["payment"] == {
        "status": "refunded",
        "amount_charged": {"amount": 2598, "currency": "EUR"},
        "amount_refunded": {"amount": 2598, "currency": "EUR"},
    }
    assert body["inventory"]["status"] == "none", "stock was never reserved"
    assert body["saga"]["state"] == "compensated"
    assert client.post(f"{ORDERS_URL}{order_id}/cancel/").status_code == 200
