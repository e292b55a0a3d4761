"""The broker settings follow CELERY_BROKER_URL: the repaired Redis transport only for Redis,
kombu's py-amqp transport with confirms for RabbitMQ, quorum queues that RabbitMQ can delay."""

import json
import os
import subprocess
import sys

import pytest

from devtools.processes import ROOT

_PROBE = """
import json, django
django.setup()
from config.celery import app
from outbox.broker import broker_countdown
connection = app.connection_for_write()
queues = [app.amqp.queues[name] for name in ("default", "payments", "relay")]
print(json.dumps({
    "transport": type(connection.transport).__module__ + "." + type(connection.transport).__name__,
    "options": app.conf.broker_transport_options,
    "queues": [[q.queue_arguments, q.durable, q.exchange.type] for q in queues],
    "countdown": broker_countdown(0.2),
}))
"""


def _settings_for(broker_url: str) -> dict:
    env = {**os.environ, "CELERY_BROKER_URL": broker_url, "DJANGO_SETTINGS_MODULE": "config.settings.test"}
    out = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("url", ["amqp://guest:guest@127.0.0.1:5672/backoffice", "amqps://u:p@rabbit:5671/v"])
def test_an_amqp_url_runs_on_kombus_amqp_transport_with_publisher_confirms_and_quorum_queues(url):
    probe = _settings_for(url)
    assert probe["transport"] in ("kombu.transport.pyamqp.Transport", "kombu.transport.pyamqp.SSLTransport")
    assert probe["options"] == {"confirm_publish": True}
    assert all(queue == [{"x-queue-type": "quorum"}, True, "topic"] for queue in probe["queues"])
    # Native delayed delivery counts whole seconds and refuses less than one.
    assert probe["countdown"] == 1.0


def test_a_redis_url_keeps_the_repaired_redis_transport_and_its_visibility_timeout():
    probe = _settings_for("redis://127.0.0.1:6379/11")
    assert probe["transport"] == "config.broker.Transport"
    assert set(probe["options"]) == {"visibility_timeout"}
    assert probe["countdown"] == 0.2


@pytest.mark.parametrize(
    ("given", "kept"),
    [("amqp://guest:guest@127.0.0.1:5672/backoffice", True), ("redis://elsewhere:6379/0", False)],
)
def test_make_run_keeps_a_rabbitmq_broker_and_drops_a_leftover_redis_one_with_embedded_redis(monkeypatch, given, kept):
    from devtools.launcher import Services, child_environment

    monkeypatch.setenv("CELERY_BROKER_URL", given)
    services = Services("postgres://x/y", "redis://127.0.0.1:7777/0", "", "", redis_from_environment=False)
    env = child_environment(services, settings_module=None)
    assert env.get("CELERY_BROKER_URL") == (given if kept else None)
