"""The storefront API's contract: authentication, the catalog, placing, reading, listing and
cancelling orders, isolation between clients, throttling and the API docs."""

import json
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.contrib.staticfiles import finders
from django.core.management import CommandError, call_command
from django.test import override_settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from common.redis import get_redis
from orders.api.tokens import api_token_issue, token_digest
from orders.models import Order
from outbox.models import OutboxMessage
from sagas.models import SagaInstance, SagaState
from testing.storefront import (
    ORDERS_URL,
    PRODUCTS_URL,
    forget_throttle_counts,
    order_body,
    place_order,
    row_counts,
)

pytestmark = pytest.mark.django_db


def _error(response) -> dict:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "fields"}, body
    return body["error"]


# ---------------------------------------------------------------------------
# Authentication
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization", [None, "Token wrong", "Bearer abc", "Token", "Token abc\x00def", "Token " + "a" * 41]
)
def test_requests_without_a_valid_token_are_refused_with_401(authorization, catalog):
    client = APIClient()
    if authorization:
        client.credentials(HTTP_AUTHORIZATION=authorization)
    for response in (client.get(PRODUCTS_URL), client.get(ORDERS_URL), place_order(client)):
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == "Token"
        assert _error(response)["code"] in ("not_authenticated", "authentication_failed")
    assert row_counts()["orders"] == 0


def test_a_deactivated_client_is_refused_and_an_active_one_is_itself(shop, other_shop, catalog):
    assert shop.get(ORDERS_URL).status_code == 200
    placed = place_order(shop).json()["id"]
    assert other_shop.get(f"{ORDERS_URL}{placed}/").status_code == 404, "each token is its own client"
    get_user_model().objects.filter(pk=shop.user.pk).update(is_active=False)
    response = shop.get(ORDERS_URL)
    assert response.status_code == 401
    assert _error(response)["message"] == "User inactive or deleted."


def test_create_api_client_prints_a_token_once_and_stores_only_its_digest(catalog):
    first, rotated = StringIO(), StringIO()
    call_command("create_api_client", "webshop-eu", stdout=first)
    key = first.getvalue().strip()
    user = get_user_model().objects.get(username="webshop-eu")
    assert not user.is_staff and not user.is_superuser and not user.has_usable_password()
    stored = Token.objects.get(user=user).key
    assert len(key) == 40 and stored != key and stored == token_digest(key)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get(PRODUCTS_URL).status_code == 200
    stolen = APIClient()  # what a reader of the database or a backup holds
    stolen.credentials(HTTP_AUTHORIZATION=f"Token {stored}")
    assert stolen.get(PRODUCTS_URL).status_code == 401

    with pytest.raises(CommandError, match="cannot be shown again"):
        call_command("create_api_client", "webshop-eu", stdout=StringIO())
    call_command("create_api_client", "webshop-eu", "--rotate", stdout=rotated)
    new_key = rotated.getvalue().strip()
    assert new_key != key
    assert client.get(PRODUCTS_URL).status_code == 401, "the old token stopped working"
    client.credentials(HTTP_AUTHORIZATION=f"Token {new_key}")
    assert client.get(PRODUCTS_URL).status_code == 200


def test_the_token_lookup_is_one_query(shop, django_assert_num_queries):
    from orders.api.authentication import StorefrontTokenAuthentication

    with django_assert_num_queries(1):
        user, _token = StorefrontTokenAuthentication().authenticate_credentials(shop.token)
    assert user.pk == shop.user.pk


def test_existing_plaintext_tokens_are_hashed_by_the_migration_and_keep_working(catalog):
    import importlib

    from django.apps import apps

    migration = importlib.import_module("orders.migrations.0006_hash_api_tokens")
    user = get_user_model().objects.create_user(username="old-shop")
    legacy = Token.objects.create(user=user)  # a key stored as it was before the migration
    migration.hash_tokens(apps, None)
    assert Token.objects.get(user=user).key == token_digest(legacy.key)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {legacy.key}")
    assert client.get(PRODUCTS_URL).status_code == 200


def test_only_superusers_see_the_tokens_in_the_admin_and_none_is_added_there(catalog):
    from django.contrib.auth.models import Permission
    from django.test import Client

    api_token_issue(user=get_user_model().objects.create_user("listed-shop"))
    staff = get_user_model().objects.create_user("sam", password="pw", is_staff=True)
    staff.user_permissions.add(*Permission.objects.filter(content_type__app_label="authtoken"))
    boss = get_user_model().objects.create_superuser("root", password="pw")
    url = "/admin/authtoken/tokenproxy/"
    as_staff, as_boss = Client(), Client()
    as_staff.force_login(staff)
    as_boss.force_login(boss)
    assert as_staff.get(url).status_code == 403
    listing = as_boss.get(url)
    assert listing.status_code == 200 and "listed-shop" in listing.content.decode()
    assert as_boss.get(url + "add/").status_code == 403


def test_create_api_client_refuses_a_staff_user():
    get_user_model().objects.create_user(username="admin", is_staff=True)
    with pytest.raises(CommandError, match="staff"):
        call_command("create_api_client", "admin", stdout=StringIO())
    assert not Token.objects.exists()


# ---------------------------------------------------------------------------
# Products
# ---------------------------------------------------------------------------


def test_products_list_sku_name_price_and_available_quantity(shop, catalog):
    response = shop.get(PRODUCTS_URL)
    assert response.status_code == 200
    cup, grinder = response.json()["results"]
    assert cup == {
        "sku": "SKU-1",
        "name": "Espresso cup",
        "price": {"amount": 1299, "currency": "EUR"},
        "available_quantity": 50,
    }
    assert grinder["price"] == {"amount": 4500, "currency": "EUR"}


def test_products_are_paginated_with_a_cursor(shop, catalog):
    first = shop.get(PRODUCTS_URL, {"page_size": 1}).json()
    assert [p["sku"] for p in first["results"]] == ["SKU-1"]
    assert first["previous"] is None
    second = shop.get(first["next"]).json()
    assert [p["sku"] for p in second["results"]] == ["SKU-2"]
    assert second["next"] is None


@pytest.mark.parametrize("page_size", ["0", "101", "1000", "-1", "1.5", "abc", "", " 5", "\u0665", "1" * 5000])
def test_a_page_size_out_of_1_to_100_is_a_400_naming_it(shop, catalog, page_size):
    for url in (PRODUCTS_URL, ORDERS_URL):
        response = shop.get(url, {"page_size": page_size})
        assert response.status_code == 400
        error = _error(response)
        assert error["code"] == "validation_error"
        assert error["fields"] == {"page_size": ["Must be an integer from 1 to 100."]}


@pytest.mark.parametrize("page_size", [1, 100])
def test_a_page_size_of_1_to_100_is_served(shop, catalog, page_size):
    response = shop.get(PRODUCTS_URL, {"page_size": page_size})
    assert response.status_code == 200
    assert len(response.json()["results"]) == min(page_size, 2)


def test_invalid_cursor_is_a_404_in_the_error_shape(shop, catalog):
    response = shop.get(PRODUCTS_URL, {"cursor": "not-a-cursor"})
    assert response.status_code == 404
    assert _error(response)["code"] == "not_found"


# ---------------------------------------------------------------------------
# Placing an order
# ---------------------------------------------------------------------------


def test_place_order_answers_202_with_the_order_and_its_location(shop, catalog):
    response = place_order(shop)
    assert response.status_code == 202
    order = Order.objects.get()
    assert response["Location"] == f"/api/v1/orders/{order.pk}/"
    body = response.json()
    assert body["id"] == order.pk
    assert body["status"] == "pending"
    assert body["cancel_reason"] == ""
    assert body["customer"] == {"email": "ann@example.com", "name": "Ann Smith"}
    assert body["lines"] == [
        {
            "sku": "SKU-1",
            "name": "Espresso cup",
            "quantity": 2,
            "unit_price": {"amount": 1299, "currency": "EUR"},
            "total": {"amount": 2598, "currency": "EUR"},
        }
    ]
    assert body["total"] == {"amount": 2598, "currency": "EUR"}
    assert body["payment"] == {
        "status": "none",
        "amount_charged": {"amount": 0, "currency": "EUR"},
        "amount_refunded": {"amount": 0, "currency": "EUR"},
    }
    assert body["inventory"] == {"status": "none", "lines": []}
    assert body["shipment"] == {"status": "none", "tracking_number": ""}
    assert body["saga"]["state"] == "running"
    assert body["saga"]["current_step"] == "charge_payment"
    assert body["saga"]["stuck"] is False
    assert [(s["step"], s["phase"], s["attempt"], s["outcome"]) for s in body["saga"]["timeline"]] == [
        ("charge_payment", "forward", 1, "pending")
    ]
    assert body["created_at"] and body["updated_at"]


def test_place_order_creates_order_saga_and_first_command_in_one_go(shop, catalog):
    key = "order-2026-0001"
    place_order(shop, key=key)
    order = Order.objects.get()
    assert order.client == shop.user
    saga = SagaInstance.objects.get(pk=order.saga_id)
    assert saga.idempotency_key == f"api:{shop.user.pk}:{key}", "the saga's lineage starts at the API key"
    assert OutboxMessage.objects.filter(correlation_id=str(saga.id), type="charge_payment").count() == 1


def test_prices_come_from_the_catalog_never_from_the_client(shop, catalog):
    body = order_body(lines=[{"sku": "SKU-2", "quantity": 1, "price": 1, "unit_price": {"amount": 1}}])
    body["total"] = {"amount": 1, "currency": "EUR"}
    response = place_order(shop, body)
    assert response.status_code == 202
    assert response.json()["total"] == {"amount": 4500, "currency": "EUR"}
    assert Order.objects.get().total_amount == 4500


def test_valid_but_unserved_country_is_accepted_by_the_api(shop, catalog):
    """Antarctica is a country code; that the carrier does not ship there is the saga's
    business failure, not a malformed request."""
    body = order_body(shipping_address={"line1": "Base", "city": "McMurdo", "postal_code": "0", "country": "AQ"})
    assert place_order(shop, body).status_code == 202


# ---------------------------------------------------------------------------
# Reading and listing
# ---------------------------------------------------------------------------


def test_order_detail_shows_the_same_order_as_the_create_answer(shop, catalog):
    created = place_order(shop).json()
    response = shop.get(f"{ORDERS_URL}{created['id']}/")
    assert response.status_code == 200
    assert response.json() == created


def test_order_list_is_newest_first_paginated_and_compact(shop, catalog):
    ids = [place_order(shop).json()["id"] for _ in range(3)]
    first = shop.get(ORDERS_URL, {"page_size": 2}).json()
    assert [o["id"] for o in first["results"]] == [ids[2], ids[1]]
    assert set(first["results"][0]) == {"id", "status", "cancel_reason", "total", "created_at", "updated_at"}
    second = shop.get(first["next"]).json()
    assert [o["id"] for o in second["results"]] == [ids[0]]


def test_order_list_filters_by_status(shop, catalog):
    pending = place_order(shop).json()["id"]
    cancelled = place_order(shop).json()["id"]
    Order.objects.filter(pk=cancelled).update(status=Order.Status.CANCELLED)
    assert [o["id"] for o in shop.get(ORDERS_URL, {"status": "cancelled"}).json()["results"]] == [cancelled]
    assert [o["id"] for o in shop.get(ORDERS_URL, {"status": "pending"}).json()["results"]] == [pending]
    assert shop.get(ORDERS_URL, {"status": "confirmed"}).json()["results"] == []


def test_order_list_with_an_unknown_status_is_a_400_naming_the_parameter(shop, catalog):
    response = shop.get(ORDERS_URL, {"status": "shipped"})
    assert response.status_code == 400
    error = _error(response)
    assert error["code"] == "validation_error" and "status" in error["fields"]


def test_order_list_takes_a_constant_number_of_queries(shop, catalog, django_assert_max_num_queries):
    for _ in range(5):
        place_order(shop)
    with django_assert_max_num_queries(4):  # token + user, the page; no query per order
        assert len(shop.get(ORDERS_URL).json()["results"]) == 5


@pytest.mark.parametrize("order_id", ["0", "abc", "99999999", "1" * 30, "-1", "1.5"])
def test_unknown_or_malformed_order_id_is_a_404(shop, catalog, order_id):
    for response in (shop.get(f"{ORDERS_URL}{order_id}/"), shop.post(f"{ORDERS_URL}{order_id}/cancel/")):
        assert response.status_code == 404
        assert _error(response)["code"] == "not_found"


def test_unknown_path_under_the_api_is_a_json_404_hinting_at_the_trailing_slash(shop, catalog):
    response = shop.get("/api/v1/orders")
    assert response.status_code == 404
    assert "/api/v1/orders/" in _error(response)["message"]
    assert _error(shop.get("/api/v1/nothing-here/"))["code"] == "not_found"


# ---------------------------------------------------------------------------
# Isolation between clients
# ---------------------------------------------------------------------------


def test_a_client_cannot_read_list_or_cancel_another_clients_order(shop, other_shop, catalog):
    order_id = place_order(shop).json()["id"]
    assert other_shop.get(f"{ORDERS_URL}{order_id}/").status_code == 404
    assert other_shop.get(ORDERS_URL).json()["results"] == []
    response = other_shop.post(f"{ORDERS_URL}{order_id}/cancel/")
    assert response.status_code == 404
    assert _error(response)["code"] == "not_found"
    saga = SagaInstance.objects.get(pk=Order.objects.get(pk=order_id).saga_id)
    assert not saga.cancel_requested, "the other client's cancel changed nothing"
    assert shop.get(f"{ORDERS_URL}{order_id}/").status_code == 200


def test_another_clients_order_and_a_missing_one_answer_alike(shop, other_shop, catalog):
    order_id = place_order(shop).json()["id"]
    theirs = other_shop.get(f"{ORDERS_URL}{order_id}/")
    missing = other_shop.get(f"{ORDERS_URL}{order_id + 1000}/")
    assert theirs.status_code == missing.status_code == 404
    assert theirs.content == missing.content


# ---------------------------------------------------------------------------
# Cancelling
# ---------------------------------------------------------------------------


def test_cancel_of_a_pending_order_answers_202_saying_a_cancellation_was_requested(shop, catalog):
    placed = place_order(shop).json()
    assert placed["cancel_requested"] is False
    response = shop.post(f"{ORDERS_URL}{placed['id']}/cancel/")
    assert response.status_code == 202
    assert (response.json()["status"], response.json()["cancel_requested"]) == ("pending", True)
    saga = SagaInstance.objects.get(pk=Order.objects.get(pk=placed["id"]).saga_id)
    assert saga.cancel_requested and saga.failure_reason == "cancelled by the customer"
    assert shop.get(f"{ORDERS_URL}{placed['id']}/").json()["cancel_requested"] is True, "the order says so too"


def test_cancel_is_idempotent_while_compensation_runs(shop, catalog):
    order_id = place_order(shop).json()["id"]
    first = shop.post(f"{ORDERS_URL}{order_id}/cancel/")
    second = shop.post(f"{ORDERS_URL}{order_id}/cancel/")
    assert first.status_code == second.status_code == 202
    saga = SagaInstance.objects.get(pk=Order.objects.get(pk=order_id).saga_id)
    assert saga.events.filter(kind="cancel_requested").count() == 1


def test_cancel_of_a_cancelled_order_answers_200(shop, catalog):
    order_id = place_order(shop).json()["id"]
    Order.objects.filter(pk=order_id).update(status=Order.Status.CANCELLED, cancel_reason="payment declined")
    response = shop.post(f"{ORDERS_URL}{order_id}/cancel/")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert response.json()["cancel_reason"] == "payment declined"


def test_cancel_of_a_confirmed_order_is_a_409_with_the_reason(shop, catalog):
    order_id = place_order(shop).json()["id"]
    Order.objects.filter(pk=order_id).update(status=Order.Status.CONFIRMED)
    response = shop.post(f"{ORDERS_URL}{order_id}/cancel/")
    assert response.status_code == 409
    error = _error(response)
    assert error["code"] == "order_not_cancellable"
    assert "confirmed" in error["message"]


def test_cancel_past_the_pivot_is_a_409(shop, catalog):
    order_id = place_order(shop).json()["id"]
    saga_id = Order.objects.get(pk=order_id).saga_id
    SagaInstance.objects.filter(pk=saga_id).update(current_step="confirm_order")
    response = shop.post(f"{ORDERS_URL}{order_id}/cancel/")
    assert response.status_code == 409
    assert "pivot" in _error(response)["message"]
    assert SagaInstance.objects.get(pk=saga_id).state == SagaState.RUNNING


# ---------------------------------------------------------------------------
# Throttling
# ---------------------------------------------------------------------------


def test_a_client_over_its_rate_gets_429_with_retry_after(shop, other_shop, catalog, settings):
    rest = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"storefront_client": "3/min"}}
    forget_throttle_counts(shop, other_shop)
    with override_settings(REST_FRAMEWORK=rest):
        statuses = [shop.get(PRODUCTS_URL).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        response = shop.get(ORDERS_URL)
        assert response.status_code == 429
        assert int(response["Retry-After"]) > 0
        assert _error(response)["code"] == "throttled"
        assert other_shop.get(PRODUCTS_URL).status_code == 200, "each client has its own budget"
    forget_throttle_counts(shop, other_shop)


# ---------------------------------------------------------------------------
# Schema and docs
# ---------------------------------------------------------------------------


def test_openapi_schema_is_public_and_documents_the_error_shape():
    response = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = json.loads(response.content)
    assert schema["openapi"].startswith("3.")
    assert {"/api/v1/products/", "/api/v1/orders/", "/api/v1/orders/{order_id}/"} <= set(schema["paths"])
    assert "/api/v1/orders/{order_id}/cancel/" in schema["paths"]
    assert set(schema["components"]["schemas"]["Error"]["properties"]) == {"error"}
    create = schema["paths"]["/api/v1/orders/"]["post"]
    assert {"400", "409", "413", "415", "422", "429"} <= set(create["responses"])
    assert any(p["name"] == "Idempotency-Key" and p["required"] for p in create["parameters"])


def test_api_docs_page_renders_from_local_static_files():
    response = APIClient().get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "swagger-ui" in html
    assert "cdn" not in html.lower(), "the docs must work offline"
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    assert finders.find("drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")
    # The start-up script is a file of its own (no inline script: the Content-Security-Policy).
    assert '<script src="/api/docs/?script="></script>' in html
    assert "/api/schema/" in APIClient().get("/api/docs/?script=").content.decode()


# ---------------------------------------------------------------------------
# Messages of a request
# ---------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_an_orders_first_command_is_left_to_the_nudged_relay_not_sent_by_the_request(shop, catalog, monkeypatch):
    from outbox import broker, nudge
    from outbox.nudge import NUDGE_KEY
    from outbox.relay import relay_batch

    sent, nudged = [], []
    monkeypatch.setattr(broker, "send_consume_tasks", sent.extend)
    monkeypatch.setattr(nudge, "send_relay_task", lambda **options: nudged.append(options))
    get_redis().delete(NUDGE_KEY)
    response = place_order(shop)  # commits, as in production
    assert response.status_code == 202
    command = OutboxMessage.objects.get(type="charge_payment")
    assert command.published_at is None and not sent, "the request sent nothing itself"
    assert nudged == [{}] and get_redis().exists(NUDGE_KEY), "it woke the relay"
    assert relay_batch() == 1
    assert [envelope["message_id"] for envelope in sent] == [str(command.message_id)]


@pytest.mark.django_db(transaction=True)
def test_an_order_committed_while_the_broker_is_down_is_answered_202_and_its_command_waits(shop, catalog, monkeypatch):
    from kombu.exceptions import OperationalError

    from outbox import nudge
    from outbox.nudge import NUDGE_KEY

    def broker_down(**options):
        raise OperationalError("Error 111 connecting to the broker. Connection refused.")

    monkeypatch.setattr(nudge, "send_relay_task", broker_down)
    get_redis().delete(NUDGE_KEY)
    response = place_order(shop)
    # The order is committed: its answer is the 202, not the failed nudge's error.
    assert response.status_code == 202, response.content
    order = Order.objects.get()
    assert response.json()["id"] == order.pk
    assert OutboxMessage.objects.get(type="charge_payment").published_at is None  # the relay's beat schedule sends it
