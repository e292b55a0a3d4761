"""The published OpenAPI schema says what the server does. It is valid OpenAPI; real answers
of every operation (orders pending, confirmed and cancelled, list pages, every error code,
503 included) are bodies its components describe, with no property they do not name; and it
types what generated clients need typed (int64 ids, a uuid, enums by reference)."""

import json
import re
from urllib.parse import urlencode

import pytest
from django.db import OperationalError
from django.test import override_settings
from openapi_spec_validator import OpenAPIV31SpecValidator
from redis.exceptions import ConnectionError as RedisConnectionError
from rest_framework.test import APIClient

from orders.api.authentication import StorefrontTokenAuthentication
from orders.models import Order
from orders.tests.served_schema import Conformance, served_schema
from testing.pump import pump
from testing.storefront import (
    ORDERS_URL,
    PRODUCTS_URL,
    forget_throttle_counts,
    in_flight_key,
    make_api_client,
    new_key,
    order_body,
    place_order,
)

pytestmark = pytest.mark.django_db

PRODUCTS = "/api/v1/products/"
ORDERS = "/api/v1/orders/"
ORDER = "/api/v1/orders/{order_id}/"
CANCEL = "/api/v1/orders/{order_id}/cancel/"
OPERATIONS = [(PRODUCTS, "get"), (ORDERS, "get"), (ORDERS, "post"), (ORDER, "get"), (CANCEL, "post")]


@pytest.fixture(scope="module")
def schema() -> dict:
    return served_schema()


@pytest.fixture
def conformance(schema) -> Conformance:
    return Conformance(schema)


def _order_url(order_id: int, *, cancel: bool = False) -> str:
    return f"{ORDERS_URL}{order_id}/" + ("cancel/" if cancel else "")


# ---------------------------------------------------------------------------
# The document itself
# ---------------------------------------------------------------------------


def test_the_served_schema_is_valid_openapi_3_1(schema):
    assert schema["openapi"].startswith("3.1.")
    errors = [
        f"{'/'.join(map(str, error.path))}: {error.message}" for error in OpenAPIV31SpecValidator(schema).iter_errors()
    ]
    assert errors == []


def _descriptions(node, path=""):
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("description", "summary") and isinstance(value, str):
                yield path, value
            else:
                yield from _descriptions(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _descriptions(item, f"{path}/{index}")


INTERNALS = re.compile(r"serializer|\bDRF\b|deep-cop|docstring|documentation only|orders\.api|\bquer(y|ies) per", re.I)


def test_the_schema_publishes_no_note_about_the_code(schema):
    leaks = [(path, text[:120]) for path, text in _descriptions(schema) if INTERNALS.search(text)]
    assert leaks == []


def test_every_operation_documents_503_and_429_with_retry_after(schema):
    for path, method in OPERATIONS:
        responses = schema["paths"][path][method]["responses"]
        for status in ("429", "503"):
            assert responses[status]["headers"]["Retry-After"]["required"] is True, (path, method, status)
            assert responses[status]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}


def test_retry_after_is_documented_only_where_it_is_sent(schema):
    assert "headers" in schema["paths"][ORDERS]["post"]["responses"]["409"], "idempotency_key_in_use sends it"
    cancel_conflict = schema["paths"][CANCEL]["post"]["responses"]["409"]
    assert "headers" not in cancel_conflict
    assert "idempotency_key_in_use" not in cancel_conflict["description"]
    assert "order" not in schema["paths"][PRODUCTS]["get"]["responses"]["404"]["description"]


def test_error_codes_are_strings_listed_in_descriptions_not_an_enum(schema):
    code = schema["components"]["schemas"]["ErrorDetail"]["properties"]["code"]
    assert code["type"] == "string" and "enum" not in code
    listed = re.findall(r"`([a-z_]+)` \((\d{3})\)", code["description"])
    assert "authentication_failed" in dict(listed) and len(listed) >= 14


def test_ids_are_int64_and_the_saga_id_a_uuid(schema):
    components = schema["components"]["schemas"]
    assert components["Order"]["properties"]["id"]["format"] == "int64"
    assert components["OrderSummary"]["properties"]["id"]["format"] == "int64"
    assert components["OrderSaga"]["properties"]["id"] == {"type": "string", "format": "uuid"}
    for path in (ORDER, CANCEL):
        (order_id,) = [p for p in schema["paths"][path][next(iter(schema["paths"][path]))]["parameters"]]
        assert order_id["schema"]["format"] == "int64"


def test_the_status_filter_takes_the_order_status_enum(schema):
    (status,) = [p for p in schema["paths"][ORDERS]["get"]["parameters"] if p["name"] == "status"]
    assert status["schema"] == {"$ref": "#/components/schemas/OrderStatusEnum"}
    assert schema["components"]["schemas"]["Order"]["properties"]["status"] == status["schema"]


def test_page_size_is_bounded(schema):
    for path in (PRODUCTS, ORDERS):
        (page_size,) = [p for p in schema["paths"][path]["get"]["parameters"] if p["name"] == "page_size"]
        assert (page_size["schema"]["minimum"], page_size["schema"]["maximum"]) == (1, 100)


def test_the_country_list_is_written_once_and_step_outcomes_keep_their_labels(schema):
    text = json.dumps(schema)
    assert text.count('"ZW"') == 1, "the codes, in CountryEnum only"
    assert "`ZW`" not in text and "- ZW" not in text, "and no description lists them again"
    outcomes = schema["components"]["schemas"]["SagaStepOutcomeEnum"]["description"]
    assert "superseded by a later attempt" in outcomes and "done by hand" in outcomes


def test_an_order_without_a_saga_is_valid_under_the_schema(conformance, shop, catalog):
    body = place_order(shop).json()
    assert conformance.component_errors(body, "Order") == []
    assert conformance.component_errors({**body, "saga": None}, "Order") == []


def test_the_conformance_check_catches_a_drift(conformance, shop, catalog):
    body = place_order(shop).json()
    assert conformance.component_errors({**body, "shipped": True}, "Order"), "an undocumented property"
    assert conformance.component_errors({**body, "id": str(body["id"])}, "Order"), "a wrong type"
    saga = {**body["saga"], "id": "not-a-uuid"}
    assert conformance.component_errors({**body, "saga": saga}, "Order"), "a wrong format"
    missing = {key: value for key, value in body.items() if key != "cancel_requested"}
    assert conformance.component_errors(missing, "Order"), "a missing property"


# ---------------------------------------------------------------------------
# Real answers against the schema
# ---------------------------------------------------------------------------


def test_orders_pending_confirmed_and_cancelled_and_list_pages_are_what_the_schema_says(conformance, shop, catalog):
    check = conformance.check
    products = check(shop.get(PRODUCTS_URL), path=PRODUCTS, method="get")
    assert [product["sku"] for product in products["results"]] == ["SKU-1", "SKU-2"]

    key = new_key()
    pending = check(place_order(shop, key=key), path=ORDERS, method="post")
    assert (pending["status"], pending["cancel_requested"]) == ("pending", False)
    replayed = place_order(shop, key=key)
    assert replayed["Idempotent-Replayed"] == "true"
    assert check(replayed, path=ORDERS, method="post") == pending
    assert check(shop.get(_order_url(pending["id"])), path=ORDER, method="get")["status"] == "pending"

    cancelling = check(shop.post(_order_url(pending["id"], cancel=True)), path=CANCEL, method="post")
    assert (cancelling["status"], cancelling["cancel_requested"]) == ("pending", True)
    confirmed_id = check(place_order(shop), path=ORDERS, method="post")["id"]
    pump()

    cancelled = check(shop.get(_order_url(pending["id"])), path=ORDER, method="get")
    assert (cancelled["status"], cancelled["cancel_requested"]) == ("cancelled", True)
    assert check(shop.post(_order_url(pending["id"], cancel=True)), path=CANCEL, method="post") == cancelled
    confirmed = check(shop.get(_order_url(confirmed_id)), path=ORDER, method="get")
    assert (confirmed["status"], confirmed["shipment"]["status"]) == ("confirmed", "created")
    assert all(step["replied_at"] for step in confirmed["saga"]["timeline"])

    page = check(shop.get(ORDERS_URL, {"page_size": 1}), path=ORDERS, method="get")
    assert [order["id"] for order in page["results"]] == [confirmed_id] and page["next"]
    rest = check(shop.get(page["next"]), path=ORDERS, method="get")
    assert [order["id"] for order in rest["results"]] == [pending["id"]] and rest["next"] is None
    only_cancelled = check(shop.get(ORDERS_URL, {"status": "cancelled"}), path=ORDERS, method="get")
    assert [order["id"] for order in only_cancelled["results"]] == [pending["id"]]


def _bad_credentials() -> list[tuple[APIClient, str]]:
    anonymous, wrong = APIClient(), APIClient()
    wrong.credentials(HTTP_AUTHORIZATION="Token wrong")
    return [(anonymous, "not_authenticated"), (wrong, "authentication_failed")]


def _every_operation(client: APIClient, order_id: int, **extra):
    """One request to each operation, as (path, method, response)."""
    yield PRODUCTS, "get", client.get(PRODUCTS_URL, **extra)
    yield ORDERS, "get", client.get(ORDERS_URL, **extra)
    yield ORDERS, "post", client.post(ORDERS_URL, order_body(), format="json", HTTP_IDEMPOTENCY_KEY=new_key(), **extra)
    yield ORDER, "get", client.get(_order_url(order_id), **extra)
    yield CANCEL, "post", client.post(_order_url(order_id, cancel=True), **extra)


def test_every_error_code_is_answered_as_the_schema_documents_it(
    conformance, schema, shop, catalog, monkeypatch, settings
):
    def expect(status: int, code: str, response, path: str, method: str) -> None:
        assert (response.status_code, json.loads(response.content)["error"]["code"]) == (status, code), (
            path,
            method,
            response.content[:300],
        )
        conformance.check(response, path=path, method=method)

    order_id = place_order(shop).json()["id"]
    for client, code in _bad_credentials():
        for path, method, response in _every_operation(client, order_id):
            expect(401, code, response, path, method)
    for path, method, response in _every_operation(shop, order_id, HTTP_ACCEPT="text/html"):
        expect(406, "not_acceptable", response, path, method)

    for path, query in ((PRODUCTS, {"page_size": 0}), (ORDERS, {"page_size": 101}), (ORDERS, {"status": "shipped"})):
        expect(400, "validation_error", shop.get(f"{path}?{urlencode(query)}"), path, "get")
        expect(404, "not_found", shop.get(path, {"cursor": "not-a-cursor"}), path, "get")
    expect(
        400, "validation_error", place_order(shop, order_body(lines=[{"sku": "SKU-1", "quantity": 0}])), ORDERS, "post"
    )
    raw = {"content_type": "application/json", "HTTP_IDEMPOTENCY_KEY": new_key()}
    expect(400, "parse_error", shop.post(ORDERS_URL, b'{"customer": ', **raw), ORDERS, "post")
    expect(413, "request_too_large", shop.post(ORDERS_URL, b" " * (1024 * 1024 + 1), **raw), ORDERS, "post")
    text = {**raw, "content_type": "text/plain"}
    expect(415, "unsupported_media_type", shop.post(ORDERS_URL, b"hello", **text), ORDERS, "post")
    key = new_key()
    place_order(shop, key=key)
    expect(
        422,
        "idempotency_key_reused",
        place_order(shop, order_body(payment={"token": "tok_mc"}), key=key),
        ORDERS,
        "post",
    )
    busy = new_key()
    in_flight_key(shop, busy, order_body())
    expect(409, "idempotency_key_in_use", place_order(shop, key=busy), ORDERS, "post")
    expect(404, "not_found", shop.get(_order_url(99_999_999)), ORDER, "get")
    expect(404, "not_found", shop.post(_order_url(99_999_999, cancel=True)), CANCEL, "post")
    confirmed = place_order(shop).json()["id"]
    pump()
    assert Order.objects.get(pk=confirmed).status == Order.Status.CONFIRMED
    expect(409, "order_not_cancellable", shop.post(_order_url(confirmed, cancel=True)), CANCEL, "post")

    # A method the path does not have is in no operation: its answer is still an Error.
    not_allowed = shop.delete(ORDERS_URL)
    assert not_allowed.status_code == 405
    assert conformance.component_errors(json.loads(not_allowed.content), "Error") == []
    conformance.codes_seen.add(json.loads(not_allowed.content)["error"]["code"])

    throttled = make_api_client("throttled-shop")
    rest = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"storefront_client": "5/min"}}
    with override_settings(REST_FRAMEWORK=rest):
        list(_every_operation(throttled, order_id))
        for path, method, response in _every_operation(throttled, order_id):
            expect(429, "throttled", response, path, method)
    forget_throttle_counts(throttled)

    def database_gone(self, key):
        raise OperationalError("terminating connection due to administrator command")

    with monkeypatch.context() as patch:
        patch.setattr(StorefrontTokenAuthentication, "authenticate_credentials", database_gone)
        for path, method, response in _every_operation(shop, order_id):
            expect(503, "service_unavailable", response, path, method)

    def redis_gone(*args, **kwargs):
        raise RedisConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    with monkeypatch.context() as patch:
        patch.setattr("orders.api.views.product_list", redis_gone)
        expect(503, "service_unavailable", shop.get(PRODUCTS_URL), PRODUCTS, "get")

    code_help = schema["components"]["schemas"]["ErrorDetail"]["properties"]["code"]["description"]
    documented = re.findall(r"`([a-z_]+)` \(\d{3}\)", code_help)
    assert conformance.codes_seen == set(documented), "every documented code is seen, and only those"
