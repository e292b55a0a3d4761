"""The broker transport's repair (config/broker.py), on a real Redis server of the test's own.

The consumer's clean-up after a lost broker is replayed step by step as celery 5.7 runs it
(collect, then close): a task channel with an unacknowledged message and a BRPOP in flight, a
remote-control channel with an auto-delete fanout queue, and the Redis server killed under them.
"""

import subprocess
import time
from collections.abc import Iterator

import pytest
from kombu import Connection, Exchange, Queue
from kombu.common import ignore_errors

from devtools.launcher import EmbeddedRedis, free_port
from devtools.processes import wait_for

STOCK = "kombu.transport.redis:Transport"
REPAIRED = "config.broker:Transport"


@pytest.fixture
def redis_server(tmp_path) -> Iterator[tuple[subprocess.Popen, int]]:
    port = free_port()
    server = subprocess.Popen(
        [str(EmbeddedRedis.executable()), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    yield server, port
    if server.poll() is None:
        server.kill()
    server.wait(timeout=10)


def _lose_the_broker_with_a_message_in_flight(server: subprocess.Popen, port: int, transport: str) -> Connection:
    connection = Connection(f"redis://127.0.0.1:{port}/0", transport=transport)
    wait_for(lambda: _connects(connection), timeout=10)
    tasks = Queue("tasks", Exchange("tasks"), routing_key="tasks")
    with connection.Producer() as producer:
        producer.publish({"n": 1}, exchange=tasks.exchange, routing_key="tasks", declare=[tasks])
    received = []
    connection.Consumer([tasks], callbacks=[lambda body, message: received.append(message)]).consume()
    connection.drain_events(timeout=5)
    assert received, "the message was not delivered"
    control = connection.channel()
    fanout = Queue("control", Exchange("control", type="fanout"), auto_delete=True)
    connection.Consumer([fanout], channel=control, callbacks=[lambda body, message: None]).consume()
    received[0].channel._brpop_start()  # the event loop's BRPOP, outstanding when the broker dies
    server.kill()
    server.wait(timeout=10)
    time.sleep(0.1)
    return connection


def _connects(connection: Connection) -> bool:
    try:
        connection.ensure_connection(max_retries=1)
        return True
    except Exception:  # noqa: BLE001 - not up yet
        return False


def test_kombus_own_transport_still_fails_its_cleanup_after_a_lost_broker_with_attribute_error(redis_server):
    """The upstream failure the repair exists for. When this test fails, kombu or celery fixed
    it: drop config/broker.py and CELERY_BROKER_TRANSPORT."""
    connection = _lose_the_broker_with_a_message_in_flight(*redis_server, STOCK)
    connection.collect(socket_timeout=1)
    with pytest.raises(AttributeError, match="'NoneType' object has no attribute 'hostname'"):
        ignore_errors(connection, connection.close)


def test_the_repaired_transport_turns_the_cleanup_failure_into_a_connection_error_that_is_ignored(redis_server):
    connection = _lose_the_broker_with_a_message_in_flight(*redis_server, REPAIRED)
    connection.collect(socket_timeout=1)
    ignore_errors(connection, connection.close)  # raises nothing: the consumer goes on to reconnect


def test_the_celery_app_uses_the_repaired_transport():
    from config.broker import Transport
    from config.celery import app

    with app.connection_for_write() as connection:
        assert isinstance(connection.transport, Transport)


class _ExitedChild:
    """A pool child that died while the consumer reconnected: untracked, not yet reaped."""

    _sentinel_poll = None


@pytest.mark.parametrize(
    ("pool_class", "fails"),
    [("celery.concurrency.asynpool:AsynPool", True), ("config.pool:AsynPool", False)],
)
def test_a_child_that_died_during_a_reconnect_is_skipped_when_the_pool_registers_again(pool_class, fails):
    """With Celery's own class this is the worker's death (when it stops failing, upstream fixed
    it: drop config/pool.py and CELERY_WORKER_POOL); with ours the child is left to maintain_pool."""
    from kombu.asynchronous import Hub
    from kombu.utils.imports import symbol_by_name

    pool = symbol_by_name(pool_class).__new__(symbol_by_name(pool_class))  # no processes needed
    hub = Hub()
    try:
        if fails:
            with pytest.raises(ValueError, match="file descriptor is None"):
                pool._track_child_process(_ExitedChild(), hub)
        else:
            pool._track_child_process(_ExitedChild(), hub)
            assert not hub.readers
    finally:
        hub.close()
