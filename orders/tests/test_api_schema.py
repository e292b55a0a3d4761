"""The API against its own OpenAPI schema, with schemathesis: generated requests (valid and
invalid ones) with a valid token must never get a 5xx, nor a response the schema does not
describe. Bounded: a few dozen examples per operation, a few seconds in all."""

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.db import transaction
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from inventory.services import LineRequest, stock_reserve
from orders.api.tokens import token_digest
from orders.models import Order
from payments.gateway import GatewayResponse
from payments.services import payment_record_charge
from sagas.keys import step_key
from shipping.carrier import CarrierResponse
from shipping.services import shipment_record
from testing.storefront import make_api_client, order_body, parked_order, stock_catalog

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


pytestmark = pytest.mark.worker


@pytest.fixture
def storefront_token(live_system) -> str:
    """A client with a few orders, so that lists return real data. On a live system: the
    orders that generated requests place are committed, and the session's worker carries
    their sagas on; the fixture waits for it before the tables are emptied."""
    stock_catalog()
    client = make_api_client("schemathesis")
    for _ in range(3):
        parked_order(client.user)
    return client.token


def _load_schema() -> schemathesis.BaseSchema:
    # Served by the app itself (no database involved), so it is always the schema the code
    # declares. Loaded eagerly: schemathesis' lazy fixture loader does not support pytest 9.
    loaded = schemathesis.openapi.from_wsgi("/api/schema/?format=json", WSGIHandler())
    loaded.config.generation.update(max_examples=30)
    return loaded


schema = _load_schema()


@schema.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture],
)
def test_api_conforms_to_its_schema(case, storefront_token):
    # A Host header is the transport's, not the API's: Django refuses one that is not a host
    # name before any view runs (an HTML 400, as for every path of the site).
    for name in [name for name in case.headers or {} if name.lower() == "host"]:
        del case.headers[name]
    case.call_and_validate(headers={"Authorization": f"Token {storefront_token}"}, checks=CHECKS)


def _order_in_every_context(user) -> int:
    """An order that the other contexts have acted on, written through their own services, so
    that its detail shows a payment, a reservation and a shipment."""
    order = parked_order(user)
    order_id, saga_id = order.pk, order.saga_id
    with transaction.atomic():
        payment_record_charge(
            order_id=order_id,
            step_key=step_key(saga_id, "charge_payment"),
            response=GatewayResponse(True, "charge", 2598, "EUR", "ch_test"),
        )
        stock_reserve(
            order_id=order_id,
            idempotency_key=step_key(saga_id, "reserve_stock"),
            lines=[LineRequest(sku="SKU-1", quantity=2)],
        )
        shipment_record(
            order_id=order_id,
            step_key=step_key(saga_id, "create_shipment"),
            address=order_body()["shipping_address"],
            response=CarrierResponse(True, "shp_test", "TRK000000000001"),
        )
    return order_id


def test_real_order_answers_conform_to_the_schema(storefront_token):
    """Random ids rarely hit a real order: check the detail and every cancel answer (202, 200,
    409) of real orders against the schema too."""
    user = Token.objects.get(key=token_digest(storefront_token)).user
    headers = {"Authorization": f"Token {storefront_token}"}
    detail = schema["/api/v1/orders/{order_id}/"]["GET"]
    cancel = schema["/api/v1/orders/{order_id}/cancel/"]["POST"]

    rich = _order_in_every_context(user)
    response = detail.Case(path_parameters={"order_id": rich}).call_and_validate(headers=headers, checks=CHECKS)
    assert response.status_code == 200
    assert response.json()["shipment"]["tracking_number"] == "TRK000000000001"

    pending = parked_order(user).pk
    answers = [cancel.Case(path_parameters={"order_id": pending}).call_and_validate(headers=headers, checks=CHECKS)]
    Order.objects.filter(pk=pending).update(status=Order.Status.CANCELLED, cancel_reason="cancelled by the customer")
    answers.append(cancel.Case(path_parameters={"order_id": pending}).call_and_validate(headers=headers, checks=CHECKS))
    Order.objects.filter(pk=rich).update(status=Order.Status.CONFIRMED)
    answers.append(cancel.Case(path_parameters={"order_id": rich}).call_and_validate(headers=headers, checks=CHECKS))
    assert [answer.status_code for answer in answers] == [202, 200, 409]
