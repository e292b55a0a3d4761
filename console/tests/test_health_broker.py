"""/healthz on RabbitMQ checks the broker itself (on Redis, the Redis check is the broker's)."""

import pytest
from kombu import Connection
from kombu.exceptions import OperationalError

from config.celery import app
from conftest import celery_app_on
from console.health import _check_broker
from devtools.launcher import free_port

pytestmark = pytest.mark.django_db


def test_the_broker_check_passes_on_a_live_rabbitmq_with_its_queues_declared(rabbitmq_url):
    with Connection(rabbitmq_url) as connection:
        app.amqp.queues["default"].bind(connection.channel()).declare()
    with celery_app_on(rabbitmq_url):
        assert _check_broker() == {"ok": True}


def test_the_broker_check_fails_when_rabbitmq_does_not_answer():
    with celery_app_on(f"amqp://guest:guest@127.0.0.1:{free_port()}/nowhere"), pytest.raises(OperationalError):
        _check_broker()
