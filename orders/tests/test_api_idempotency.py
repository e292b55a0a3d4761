"""Idempotency keys of POST /api/v1/orders/, with Stripe's semantics, on real PostgreSQL."""

import json
import threading
import uuid
from datetime import timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from inventory.models import Product
from orders import idempotency
from orders.idempotency import idempotency_keys_purge
from orders.models import IdempotencyKey, Order
from orders.tasks import purge_idempotency_keys
from outbox.models import OutboxMessage
from sagas.models import SagaInstance
from testing.storefront import (
    ORDERS_URL,
    in_flight_key,
    make_api_client,
    new_key,
    order_body,
    place_order,
    row_counts,
    stock_catalog,
)


@pytest.mark.django_db
class TestReplay:
    def test_retry_with_same_key_and_body_gets_the_stored_response_byte_for_byte(self, shop, catalog):
        key = new_key()
        first = place_order(shop, key=key)
        # The world moves on: the order is cancelled, the product leaves the catalog.
        Order.objects.update(status=Order.Status.CANCELLED)
        Product.objects.update(active=False)
        counts = row_counts()
        retry = place_order(shop, key=key)
        assert (retry.status_code, retry.content) == (first.status_code, first.content) == (202, first.content)
        assert retry["Location"] == first["Location"]
        assert retry["Idempotent-Replayed"] == "true"
        assert not first.has_header("Idempotent-Replayed")
        assert row_counts() == counts, "a replay creates nothing"

    def test_retry_with_the_same_body_serialised_differently_is_the_same_request(self, shop, catalog):
        key = new_key()
        body = order_body()
        first = shop.post(ORDERS_URL, json.dumps(body), content_type="application/json", HTTP_IDEMPOTENCY_KEY=key)
        reordered = json.dumps(dict(reversed(list(body.items()))), indent=2)
        retry = shop.post(ORDERS_URL, reordered, content_type="application/json", HTTP_IDEMPOTENCY_KEY=key)
        assert retry.content == first.content
        assert Order.objects.count() == 1

    def test_same_key_different_body_is_a_422_and_creates_nothing(self, shop, catalog):
        key = new_key()
        place_order(shop, key=key)
        counts = row_counts()
        response = place_order(shop, order_body(lines=[{"sku": "SKU-1", "quantity": 3}]), key=key)
        assert response.status_code == 422
        error = response.json()["error"]
        assert error["code"] == "idempotency_key_reused"
        assert "different request" in error["message"]
        assert row_counts() == counts

    def test_keys_are_scoped_per_client(self, shop, other_shop, catalog):
        key = new_key()
        mine, theirs = place_order(shop, key=key), place_order(other_shop, key=key)
        assert mine.status_code == theirs.status_code == 202
        assert mine.json()["id"] != theirs.json()["id"]
        assert Order.objects.filter(client=shop.user).count() == Order.objects.filter(client=other_shop.user).count()

    def test_a_completed_key_always_has_its_order(self, shop, catalog):
        place_order(shop)
        key = IdempotencyKey.objects.get()
        assert key.state == IdempotencyKey.State.COMPLETED
        assert key.order == Order.objects.get()
        assert key.response_status == 202
        with pytest.raises(IntegrityError), transaction.atomic():
            IdempotencyKey.objects.filter(pk=key.pk).update(order=None)


@pytest.mark.django_db
class TestInFlight:
    def test_same_key_while_the_first_request_is_in_flight_is_a_409(self, shop, catalog):
        key = new_key()
        in_flight_key(shop, key, order_body())
        counts = row_counts()
        response = place_order(shop, key=key)
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "idempotency_key_in_use"
        assert response["Retry-After"] == "1"
        assert row_counts() == counts

    def test_different_body_while_in_flight_is_still_a_422(self, shop, catalog):
        key = new_key()
        in_flight_key(shop, key, order_body())
        response = place_order(shop, order_body(payment={"token": "tok_mastercard"}), key=key)
        assert response.status_code == 422

    def test_a_claim_left_by_a_crashed_request_is_taken_over_after_the_timeout(self, shop, catalog, settings):
        key = new_key()
        crashed = in_flight_key(
            shop, key, order_body(), locked_ago=timedelta(seconds=settings.IDEMPOTENCY_IN_FLIGHT_TIMEOUT_SECONDS + 5)
        )
        response = place_order(shop, key=key)
        assert response.status_code == 202
        crashed.refresh_from_db()
        assert crashed.state == IdempotencyKey.State.COMPLETED
        assert crashed.order_id == response.json()["id"]
        assert place_order(shop, key=key).content == response.content

    def test_a_request_whose_claim_was_taken_over_commits_nothing(self, shop, catalog, monkeypatch):
        """A slow request whose claim went stale and was taken over by a retry must not create
        a second order when it finally gets to work."""
        real_claim = idempotency._claim_or_replay

        def claim_then_lose_it(**kwargs):
            claim = real_claim(**kwargs)
            IdempotencyKey.objects.filter(pk=claim.pk).update(lock_token=uuid.uuid4())  # a retry took it over
            return claim

        monkeypatch.setattr(idempotency, "_claim_or_replay", claim_then_lose_it)
        response = place_order(shop)
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "idempotency_key_in_use"
        assert row_counts() == {"orders": 0, "keys": 1, "sagas": 0, "outbox": 0}, "the taker's claim stays"

    def test_a_failure_after_the_order_was_written_rolls_back_order_and_key(self, shop, catalog, monkeypatch):
        """The order and the completion of its key commit together or not at all."""
        from orders.api import views

        def broken_render(order, **_):
            assert Order.objects.filter(pk=order.pk).exists()
            raise RuntimeError("rendering failed")

        monkeypatch.setattr(views, "render_order", broken_render)
        with pytest.raises(RuntimeError):
            place_order(shop)
        assert row_counts() == {"orders": 0, "keys": 0, "sagas": 0, "outbox": 0}
        monkeypatch.undo()
        assert place_order(shop).status_code == 202, "the key is free again"


@pytest.mark.django_db
class TestExpiry:
    def test_a_key_older_than_24_hours_is_a_new_key(self, shop, catalog):
        key = new_key()
        place_order(shop, key=key)
        IdempotencyKey.objects.update(created_at=timezone.now() - timedelta(hours=25))
        response = place_order(shop, key=key)
        assert response.status_code == 202
        assert not response.has_header("Idempotent-Replayed")
        assert Order.objects.count() == 2
        assert IdempotencyKey.objects.count() == 1

    def test_purge_deletes_expired_keys_in_batches_and_keeps_fresh_ones(self, shop, catalog, settings):
        for _ in range(5):
            place_order(shop)
        old = list(IdempotencyKey.objects.order_by("id").values_list("id", flat=True)[:3])
        IdempotencyKey.objects.filter(pk__in=old).update(created_at=timezone.now() - timedelta(hours=24, minutes=1))
        assert idempotency_keys_purge(batch_size=2, max_batches=1) == 2, "one batch of two"
        settings.IDEMPOTENCY_PURGE_BATCH_SIZE = 2
        assert purge_idempotency_keys() == 1
        assert IdempotencyKey.objects.count() == 2
        assert not IdempotencyKey.objects.filter(pk__in=old).exists()
        assert Order.objects.count() == 5, "purging keys never touches orders"

    def test_beat_purges_keys_every_ten_minutes(self):
        task = PeriodicTask.objects.get(task="orders.purge_idempotency_keys")
        assert task.enabled
        assert (task.interval.every, task.interval.period) == (600, "seconds")


@pytest.mark.worker
def test_twenty_concurrent_requests_with_one_key_create_one_order_and_one_saga(live_system):
    # live_system: the order is committed for real, so the session's worker carries its saga
    # on; the fixture waits for it to finish before the tables are emptied for the next test.
    stock_catalog()
    client = make_api_client("shop-concurrent")
    key = new_key()
    body = json.dumps(order_body())
    barrier = threading.Barrier(20)
    responses: list = []
    errors: list = []

    def send() -> None:
        try:
            barrier.wait(timeout=30)
            responses.append(client.post(ORDERS_URL, body, content_type="application/json", HTTP_IDEMPOTENCY_KEY=key))
        except Exception as exc:  # noqa: BLE001  surfaced below: a thread's failure fails the test
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert len(responses) == 20
    statuses = sorted(response.status_code for response in responses)
    assert set(statuses) <= {202, 409}, statuses
    assert 202 in statuses
    accepted = {response.content for response in responses if response.status_code == 202}
    assert len(accepted) == 1, "every 202 is the same stored response, byte for byte"
    for response in responses:
        if response.status_code == 409:
            assert response.json()["error"]["code"] == "idempotency_key_in_use"
    assert Order.objects.count() == 1
    assert SagaInstance.objects.count() == 1
    assert OutboxMessage.objects.filter(type="charge_payment").count() == 1
    key_row = IdempotencyKey.objects.get()
    assert key_row.state == IdempotencyKey.State.COMPLETED and key_row.order == Order.objects.get()
    # Once the first request is done, every retry gets its response.
    assert place_order(client, key=key).content == accepted.pop()
