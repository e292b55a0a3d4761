"""/metrics: the counters move by what happened, the database gauges read the truth, and
only scrapers may read it.

Counters are process-global and other tests move them too: each test measures deltas.
"""

import pytest
from django.test import Client, override_settings
from prometheus_client.parser import text_string_to_metric_families

from orders.models import Order
from outbox.consumer import deliver
from outbox.models import OutboxMessage
from testing.messages import sent_envelope
from testing.pump import pump
from testing.storefront import make_api_client, new_key, order_body, place_order, stock_catalog

pytestmark = pytest.mark.django_db

Samples = dict[tuple[str, frozenset], float]


def scrape(client: Client | None = None, **request_extra) -> Samples:
    response = (client or Client()).get("/metrics", **request_extra)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_counters_move_by_the_orders_placed_and_the_duplicate_absorbed():
    stock_catalog()
    shop = make_api_client("shop-metrics")
    before = scrape()

    replayed_key = new_key()
    assert place_order(shop, key=replayed_key).status_code == 202
    assert place_order(shop).status_code == 202
    assert place_order(shop).status_code == 202
    replay = place_order(shop, key=replayed_key)
    assert replay.status_code == 202 and replay["Idempotent-Replayed"] == "true"
    assert place_order(shop, order_body(payment={"token": "tok_mastercard"}), key=replayed_key).status_code == 422
    assert place_order(shop, {"lines": []}).status_code == 400
    pump()
    assert Order.objects.filter(status=Order.Status.CONFIRMED).count() == 3
    charge = OutboxMessage.objects.filter(type="charge_payment").order_by("id").first()
    assert deliver(sent_envelope(charge)) == "duplicate"

    after = scrape()

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("backoffice_sagas_started_total", definition="order_fulfilment") == 3
    assert delta("backoffice_sagas_finished_total", definition="order_fulfilment", state="completed") == 3
    assert delta("backoffice_sagas_finished_total", definition="order_fulfilment", state="compensated") == 0
    assert delta("backoffice_duplicates_absorbed_total", consumer="payments") == 1
    assert (
        delta("backoffice_messages_delivered_total", consumer="payments", type="charge_payment", outcome="handled") == 3
    )
    assert (
        delta("backoffice_messages_delivered_total", consumer="payments", type="charge_payment", outcome="duplicate")
        == 1
    )
    assert delta("backoffice_messages_delivered_total", consumer="sagas", type="saga_reply", outcome="handled") == 12
    step = {"step": "charge_payment", "phase": "forward", "outcome": "success"}
    assert delta("backoffice_saga_step_duration_seconds_count", **step) == 3
    route = "api/v1/orders/"
    assert delta("backoffice_api_requests_total", method="POST", route=route, status="202") == 4
    assert delta("backoffice_api_requests_total", method="POST", route=route, status="422") == 1
    assert delta("backoffice_api_requests_total", method="POST", route=route, status="400") == 1
    assert delta("backoffice_idempotency_keys_total", outcome="replayed") == 1
    assert delta("backoffice_idempotency_keys_total", outcome="reused") == 1
    # Read from the database at scrape time: the pump published everything.
    assert value(after, "backoffice_database_scrape_up") == 1
    assert value(after, "backoffice_outbox_backlog_messages") == 0
    assert value(after, "backoffice_dead_letters") == 0


def test_backlog_gauge_reads_the_unpublished_messages():
    stock_catalog()
    assert place_order(make_api_client("shop-backlog")).status_code == 202
    samples = scrape()
    assert value(samples, "backoffice_outbox_backlog_messages") == 2  # the first command, the order.placed event
    assert value(samples, "backoffice_outbox_oldest_age_seconds") >= 0


def test_metrics_are_refused_to_the_public_and_open_to_scrapers():
    client = Client()
    public = {"REMOTE_ADDR": "203.0.113.7"}
    assert client.get("/metrics", **public).status_code == 403
    # Behind a proxy on the same host every visitor comes from loopback: not trusted by address.
    assert client.get("/metrics", HTTP_X_FORWARDED_FOR="203.0.113.7").status_code == 403
    with override_settings(METRICS_ALLOWED_NETWORKS=["203.0.113.0/24"]):
        assert client.get("/metrics", **public).status_code == 200
        assert client.get("/metrics", REMOTE_ADDR="198.51.100.1").status_code == 403
    with override_settings(METRICS_TOKEN="s3cret-scrape-token"):
        assert client.get("/metrics", **public, HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
        assert client.get("/metrics", **public, HTTP_AUTHORIZATION="Bearer s3cret-scrape-token").status_code == 200
        assert (
            client.get(
                "/metrics", HTTP_X_FORWARDED_FOR="203.0.113.7", HTTP_AUTHORIZATION="Bearer s3cret-scrape-token"
            ).status_code
            == 200
        )
    assert client.post("/metrics").status_code == 405


def _series() -> set[tuple[str, frozenset]]:
    return {key for key in scrape() if key[0].startswith("backoffice_") and "database" not in key[0]}


def test_a_thousand_made_up_http_methods_add_no_metric_series():
    token = f"Token {make_api_client('shop-methods').token}"
    client = Client()
    # Anonymous (answered 401 before the method is looked at) and with a token (405): the first
    # made-up method of each may open the "other" series of its answer.
    client.generic("MADEUP", "/api/v1/orders/")
    client.generic("MADEUP", "/api/v1/products/", HTTP_AUTHORIZATION=token)
    before = _series()

    for i in range(500):
        client.generic(f"X{i}", "/api/v1/orders/")
        client.generic(f"Y{i}", "/api/v1/products/", HTTP_AUTHORIZATION=token)

    after = _series()
    assert after == before
    methods = {dict(labels)["method"] for name, labels in after if name == "backoffice_api_requests_total"}
    assert methods <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "other"}


def test_a_poison_message_from_a_made_up_queue_is_counted_under_other():
    before = _series()
    for i in range(50):
        deliver("junk", queue=f"made-up-{i}")
    assert {dict(labels).get("consumer") for _, labels in _series() - before} <= {"other"}
