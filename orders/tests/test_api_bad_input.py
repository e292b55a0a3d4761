"""Bad input to POST /api/v1/orders/: always a 4xx in the one error shape, naming the field,
never a 500, and nothing written (no order, saga, outbox message nor idempotency key)."""

import json
from typing import Any

import pytest

from inventory.services import product_upsert, stock_receive
from testing.storefront import ORDERS_URL, new_key, order_body, place_order, row_counts

pytestmark = pytest.mark.django_db

MIB = 1024 * 1024


def _lines(*lines: dict[str, Any]) -> dict[str, Any]:
    return order_body(lines=list(lines))


def _with(section: str, **changes: Any) -> dict[str, Any]:
    body = order_body()
    body[section] = {**body[section], **changes}
    return body


def _without(field: str) -> dict[str, Any]:
    body = order_body()
    del body[field]
    return body


# (body, the field the error must name)
BAD_BODIES = {
    "unknown sku": (_lines({"sku": "NOPE-1", "quantity": 1}), "lines.0.sku"),
    "unknown sku on a later line": (
        _lines({"sku": "SKU-1", "quantity": 1}, {"sku": "NOPE-2", "quantity": 1}),
        "lines.1.sku",
    ),
    "quantity of 0": (_lines({"sku": "SKU-1", "quantity": 0}), "lines.0.quantity"),
    "negative quantity": (_lines({"sku": "SKU-1", "quantity": -3}), "lines.0.quantity"),
    "absurdly large quantity": (_lines({"sku": "SKU-1", "quantity": 10**12}), "lines.0.quantity"),
    "quantity as a string": (_lines({"sku": "SKU-1", "quantity": "2"}), "lines.0.quantity"),
    "quantity as a float": (_lines({"sku": "SKU-1", "quantity": 2.5}), "lines.0.quantity"),
    "quantity as a boolean": (_lines({"sku": "SKU-1", "quantity": True}), "lines.0.quantity"),
    "quantity missing": (_lines({"sku": "SKU-1"}), "lines.0.quantity"),
    "sku as a number": (_lines({"sku": 1, "quantity": 1}), "lines.0.sku"),
    "duplicate skus": (_lines({"sku": "SKU-1", "quantity": 1}, {"sku": "SKU-1", "quantity": 2}), "lines.1.sku"),
    "empty lines": (order_body(lines=[]), "lines"),
    "more than 100 lines": (order_body(lines=[{"sku": f"SKU-{i}", "quantity": 1} for i in range(101)]), "lines"),
    "lines not a list": (order_body(lines={"sku": "SKU-1", "quantity": 1}), "lines"),
    "a line not an object": (order_body(lines=["SKU-1"]), "lines.0"),
    "total over the integer range": (_lines({"sku": "SKU-BIG", "quantity": 1000}), "lines"),
    "malformed email": (_with("customer", email="ann.example.com"), "customer.email"),
    "blank name": (_with("customer", name="   "), "customer.name"),
    "name with a NUL character": (_with("customer", name="Ann\x00Smith"), "customer.name"),
    "customer a string": (order_body(customer="ann@example.com"), "customer"),
    "missing customer": (_without("customer"), "customer"),
    "unknown country code": (_with("shipping_address", country="XX"), "shipping_address.country"),
    "lower-case country code": (_with("shipping_address", country="de"), "shipping_address.country"),
    "country as a number": (_with("shipping_address", country=49), "shipping_address.country"),
    "missing city": (
        order_body(shipping_address={"line1": "1 Main St", "postal_code": "1", "country": "DE"}),
        "shipping_address.city",
    ),  # fmt: skip
    "empty payment token": (_with("payment", token=""), "payment.token"),
    "payment token over 100 characters": (_with("payment", token="t" * 101), "payment.token"),
    "payment token a number": (_with("payment", token=4242), "payment.token"),
    "missing payment": (_without("payment"), "payment"),
    "body a list": ([order_body()], "non_field_errors"),
    "body a string": ("order", "non_field_errors"),
    "body null": (None, "non_field_errors"),
}


@pytest.fixture
def priced_catalog(catalog):
    big = product_upsert(sku="SKU-BIG", name="Yacht", price_amount=9_000_000)
    stock_receive(product=big, quantity=1)
    return catalog


def _assert_error(response, status: int, code: str, field: str | None = None) -> dict:
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"code", "message", "fields"}
    assert error["code"] == code
    assert error["message"]
    if field is not None:
        assert field in error["fields"], error
        assert all(isinstance(message, str) for message in error["fields"][field])
    return error


@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_bad_body_is_a_400_naming_the_field_and_writes_nothing(shop, priced_catalog, case):
    body, field = BAD_BODIES[case]
    before = row_counts()
    raw = json.dumps(body)
    response = shop.post(ORDERS_URL, raw, content_type="application/json", HTTP_IDEMPOTENCY_KEY=new_key())
    _assert_error(response, 400, "validation_error", field)
    assert row_counts() == before


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(None, id="missing"),
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param("k" * 256, id="256 characters"),
        pytest.param("key\x01with-control", id="control character"),
        pytest.param("clé-é", id="not ASCII"),
    ],
)
def test_missing_or_malformed_idempotency_key_is_a_400_and_writes_nothing(shop, catalog, key):
    headers = {} if key is None else {"HTTP_IDEMPOTENCY_KEY": key}
    before = row_counts()
    response = shop.post(ORDERS_URL, order_body(), format="json", **headers)
    _assert_error(response, 400, "validation_error", "Idempotency-Key")
    assert row_counts() == before


def test_a_255_character_key_is_accepted(shop, catalog):
    assert place_order(shop, key="k" * 255).status_code == 202


RAW_BODIES = {
    "not JSON": (b'{"customer": ', "application/json", 400, "parse_error"),
    "JSON with NaN": (b'{"lines": [{"sku": "SKU-1", "quantity": NaN}]}', "application/json", 400, "parse_error"),
    "invalid UTF-8": (b'{"customer": "\xff\xfe"}', "application/json", 400, "parse_error"),
    "a charset that is no text encoding": (b"{}", "application/json; charset=bz2_codec", 400, "parse_error"),
    # Django ignores a charset it does not know and reads UTF-8: the empty object is then invalid.
    "an unknown charset": (b"{}", "application/json; charset=klingon", 400, "validation_error"),
    "nested a hundred thousand levels deep": (b"[" * 100_000 + b"]" * 100_000, "application/json", 400, "parse_error"),
    "a number of 5000 digits": (b'{"x": ' + b"9" * 5000 + b"}", "application/json", 400, "parse_error"),
    "a form": (b"customer=ann", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    "plain text": (b"hello", "text/plain", 415, "unsupported_media_type"),
    "multipart": (b"--x--", "multipart/form-data; boundary=x", 415, "unsupported_media_type"),
}


@pytest.mark.parametrize("case", list(RAW_BODIES))
def test_body_that_is_not_json_is_refused_and_writes_nothing(shop, catalog, case):
    raw, content_type, status, code = RAW_BODIES[case]
    before = row_counts()
    response = shop.post(ORDERS_URL, raw, content_type=content_type, HTTP_IDEMPOTENCY_KEY=new_key())
    _assert_error(response, status, code)
    assert row_counts() == before


def test_lone_surrogate_in_a_string_is_a_400_not_a_database_error(shop, catalog):
    raw = json.dumps(order_body()).replace("Ann Smith", "Ann \\ud800 Smith").encode()
    before = row_counts()
    response = shop.post(ORDERS_URL, raw, content_type="application/json", HTTP_IDEMPOTENCY_KEY=new_key())
    _assert_error(response, 400, "validation_error", "customer.name")
    assert row_counts() == before


def test_body_over_1_mib_is_a_413_and_writes_nothing(shop, catalog):
    raw = json.dumps({**order_body(), "padding": "x" * MIB}).encode()
    before = row_counts()
    response = shop.post(ORDERS_URL, raw, content_type="application/json", HTTP_IDEMPOTENCY_KEY=new_key())
    _assert_error(response, 413, "request_too_large")
    assert row_counts() == before


def test_body_of_exactly_1_mib_is_accepted(shop, catalog):
    base = json.dumps({**order_body(), "padding": ""}).encode()
    raw = json.dumps({**order_body(), "padding": "x" * (MIB - len(base))}).encode()
    assert len(raw) == MIB
    response = shop.post(ORDERS_URL, raw, content_type="application/json", HTTP_IDEMPOTENCY_KEY=new_key())
    assert response.status_code == 202


def test_a_fixed_request_succeeds_with_the_key_of_a_rejected_one(shop, catalog):
    """Validation failures store nothing against the key: the client fixes and retries."""
    key = new_key()
    bad = place_order(shop, _lines({"sku": "NOPE", "quantity": 1}), key=key)
    assert bad.status_code == 400
    fixed = place_order(shop, order_body(), key=key)
    assert fixed.status_code == 202
    assert row_counts()["orders"] == 1
