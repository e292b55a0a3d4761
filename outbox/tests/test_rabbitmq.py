"""The relay's publisher on RabbitMQ: Celery's own message, confirmed by the broker batch by batch,
and nothing marked published when the broker did not confirm. On the session's virtual host."""

import json
import logging
import socket
import time
import uuid
from collections.abc import Iterator

import pytest
from kombu import Connection, Exchange, Queue

from common.redis import get_redis
from config.celery import app
from conftest import celery_app_on, wait_for
from devtools.launcher import free_port
from outbox import rabbitmq, signing, tasks
from outbox.broker import _send_through_celery, send_consume_tasks
from outbox.exceptions import BrokerUnconfirmed
from outbox.models import OutboxMessage
from outbox.nudge import NUDGE_KEY, nudge_relay
from outbox.relay import relay_batch

pytestmark = pytest.mark.django_db(transaction=True)

# A queue no worker consumes, so that the messages stay where the test reads them.
QUEUE = "broker-format-check"


@pytest.fixture
def on_rabbitmq(rabbitmq_url, monkeypatch) -> Iterator[str]:
    """This process on RabbitMQ, with a queue declared as the settings declare every queue."""
    default = app.amqp.queues["default"]
    queue = Queue(QUEUE, default.exchange, routing_key=QUEUE, durable=True, queue_arguments=default.queue_arguments)
    monkeypatch.setitem(app.amqp.queues, QUEUE, queue)
    with celery_app_on(rabbitmq_url):
        yield rabbitmq_url
    with Connection(rabbitmq_url) as connection:
        connection.channel().queue_delete(QUEUE)


def _envelope(destination: str = QUEUE) -> dict:
    return {
        "message_id": str(uuid.uuid4()),
        "type": "ping",
        "destination": destination,
        "aggregate": "test",
        "aggregate_id": "1",
        "correlation_id": "c",
        "causation_id": "",
        "traceparent": "",
        "created_at": "2026-01-01T00:00:00+00:00",
        "payload": {"amount": 1200, "note": "né"},
        "headers": {"saga_id": "s"},
    }


def _take(url: str) -> list:
    with Connection(url) as connection:
        channel = connection.channel()
        messages = []
        while (message := channel.basic_get(QUEUE, no_ack=True)) is not None:
            messages.append(message)
        return messages


def test_relay_publishes_on_rabbitmq_the_message_celery_publishes(on_rabbitmq):
    assert tasks.consume.name in app.tasks  # registered, as in every process that relays
    envelope = _envelope()
    _send_through_celery([envelope])
    send_consume_tasks([envelope])
    celery, ours = _take(on_rabbitmq)

    assert json.loads(ours.body) == json.loads(celery.body)
    assert json.loads(ours.body)[0][0] == {**envelope, "signature": json.loads(ours.body)[0][0]["signature"]}
    assert signing.is_authentic(json.loads(ours.body)[0][0])
    assert ours.properties["application_headers"]["timelimit"] == [90, 60]
    # Both ways the message reaches the queue through its exchange and routing key, persistent.
    assert ours.delivery_info["exchange"] == celery.delivery_info["exchange"] == "backoffice"
    assert ours.delivery_info["routing_key"] == celery.delivery_info["routing_key"] == QUEUE
    assert ours.properties["delivery_mode"] == 2
    assert ours.properties == celery.properties


def test_a_batch_returns_once_the_broker_confirmed_every_message(on_rabbitmq):
    send_consume_tasks([_envelope() for _ in range(500)])
    with Connection(on_rabbitmq) as connection:
        assert connection.channel().queue_declare(QUEUE, passive=True).message_count == 500


def test_a_connection_lost_while_idle_is_replaced_and_the_batch_still_confirmed(on_rabbitmq, caplog):
    send_consume_tasks([_envelope()])
    # The broker (or a firewall) dropped the idle connection; this process does not know yet.
    rabbitmq._local.publisher._connection.connection.sock.shutdown(socket.SHUT_RDWR)
    second = _envelope()
    with caplog.at_level(logging.INFO, logger="outbox.rabbitmq"):
        send_consume_tasks([second])
    assert "publishing the batch again" in caplog.text
    ids = [message.properties["application_headers"]["id"] for message in _take(on_rabbitmq)]
    assert second["message_id"] in ids


def test_a_message_the_broker_cannot_route_is_not_confirmed(on_rabbitmq, monkeypatch):
    nowhere = Queue(QUEUE, Exchange("amq.direct", type="direct"), routing_key="nobody-binds-this", no_declare=True)
    monkeypatch.setattr(app.amqp, "queues", {QUEUE: nowhere})
    with pytest.raises(BrokerUnconfirmed, match="returned"):
        rabbitmq.publish_confirmed([_envelope()])


def test_relay_marks_nothing_published_when_the_broker_does_not_answer(rabbitmq_url):
    OutboxMessage.objects.create(type="ping", destination="default", aggregate="test", aggregate_id="1", payload={})
    with celery_app_on(f"amqp://guest:guest@127.0.0.1:{free_port()}/nowhere"), pytest.raises(BrokerUnconfirmed):
        relay_batch()
    assert OutboxMessage.objects.get().published_at is None


@pytest.mark.worker
@pytest.mark.brokers("rabbitmq")
def test_a_delayed_nudge_waits_in_rabbitmqs_delay_queues_not_in_a_worker(live_system, rabbitmq_url):
    get_redis().set(NUDGE_KEY, "1", px=60_000)  # the relay deletes it as it starts
    started = time.monotonic()
    nudge_relay(countdown=2.0)
    # Two seconds: bit 1 of the delay, so the message waits out the level-1 queue's 2 s TTL.
    with Connection(rabbitmq_url) as connection:
        assert connection.channel().queue_declare("celery_delayed_1", passive=True).message_count == 1
    assert live_system.queues.unacknowledged() == 0, "no worker holds it meanwhile"
    wait_for(lambda: not get_redis().exists(NUDGE_KEY), timeout=10, message=live_system.tail())
    assert time.monotonic() - started >= 1.9
