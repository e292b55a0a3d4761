"""Fixtures that run the real system for tests: a Celery worker process against the real
broker and the test PostgreSQL database (no eager mode).

The broker is Redis unless a test asks for more: ``@pytest.mark.brokers("redis", "rabbitmq")``
runs it once on each, the RabbitMQ run against a worker of its own on a virtual host of the
session's own (created afresh, so nothing of another run or checkout is in it), with this
process's Celery app switched to it for the test's duration."""

import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import pytest
from django.conf import settings

from common.redis import get_redis
from devtools.processes import ALL_QUEUES as QUEUES
from devtools.processes import WebProcess, WorkerProcess, database_url, static_collect, wait_for

ROOT = Path(__file__).resolve().parent
ARTIFACTS = ROOT / "artifacts"
BROKERS = ("redis", "rabbitmq")
RABBITMQ = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("brokers")
    if marker is not None and "broker" in metafunc.fixturenames:
        assert set(marker.args) <= set(BROKERS), marker.args
        metafunc.parametrize("broker", marker.args, indirect=True)


@pytest.fixture
def broker(request) -> str:
    """The broker this test runs on: Redis, or each of the ``brokers`` marker's."""
    return getattr(request, "param", "redis")


class BrokerQueues(Protocol):
    def messages(self) -> int:
        """Messages queued or delivered and not yet acknowledged, delayed ones included."""

    def unacknowledged(self) -> int:
        """Messages a worker took and has not acknowledged yet."""

    def drop(self) -> None:
        """Forget every queued message (the queues and their bindings stay)."""


class RedisQueues:
    def messages(self) -> int:
        redis = get_redis()
        return sum(redis.llen(queue) for queue in QUEUES) + redis.hlen("unacked")

    def unacknowledged(self) -> int:
        return get_redis().hlen("unacked")

    def drop(self) -> None:
        drop_pending_messages()


class RabbitMQQueues:
    """The task queues and Celery's delay queues on the session's virtual host, counted over AMQP
    (ready messages), and the worker's own count of what it holds (a quorum queue's count of
    unacknowledged messages, as ``rabbitmqctl`` reports it, lags by seconds)."""

    NAMES = [*QUEUES, *(f"celery_delayed_{level}" for level in range(28))]

    def __init__(self, url: str, worker: WorkerProcess) -> None:
        self.url, self.worker = url, worker

    def _each_queue(self, action) -> int:
        from amqp.exceptions import NotFound
        from kombu import Connection

        total = 0
        with Connection(self.url) as connection:
            channel = connection.channel()
            for name in self.NAMES:
                try:
                    total += action(channel, name) or 0
                except NotFound:  # not declared yet; the channel closed with the error
                    channel = connection.channel()
        return total

    def messages(self) -> int:
        ready = self._each_queue(lambda channel, name: channel.queue_declare(name, passive=True).message_count)
        return ready + self.unacknowledged()

    def unacknowledged(self) -> int:
        from devtools.processes import control_app

        app = control_app(self.worker.broker_url)
        with app.connection_for_write() as connection:
            inspect = app.control.inspect([self.worker.name], timeout=1.0, connection=connection)
            held = 0
            for replies in (inspect.active(), inspect.reserved(), inspect.scheduled()):
                if replies is None:
                    return 1  # no answer: the worker may be holding something
                held += sum(len(tasks) for tasks in replies.values())
        return held

    def drop(self) -> None:
        self._each_queue(lambda channel, name: channel.queue_purge(name))
        get_redis().delete(_nudge_key())


def _nudge_key() -> str:
    from outbox.nudge import NUDGE_KEY

    return NUDGE_KEY


def rabbitmq_vhost_create(vhost: str) -> None:
    """A virtual host of this session's own, empty."""
    ctl = ["rabbitmqctl", "-q"]
    subprocess.run([*ctl, "delete_vhost", vhost], capture_output=True, timeout=60)
    subprocess.run([*ctl, "add_vhost", vhost], check=True, capture_output=True, timeout=60)
    subprocess.run([*ctl, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"], check=True, timeout=60)


@contextmanager
def celery_app_on(url: str) -> Iterator[None]:
    """This process's Celery app (and the outbox's relay) sending to the broker at ``url``, as
    the settings would have made it with ``CELERY_BROKER_URL=url``."""
    from config.celery import app
    from outbox import broker, rabbitmq

    keys = ("broker_url", "broker_transport", "broker_transport_options")
    saved = {key: app.conf[key] for key in keys}
    saved_pools = app._pool, app.amqp._producer_pool
    app.conf.update(broker_url=url, broker_transport=None, broker_transport_options={"confirm_publish": True})
    app._pool = app.amqp._producer_pool = None
    broker._redis_broker.cache_clear()
    try:
        yield
    finally:
        publisher = getattr(rabbitmq._local, "publisher", None)
        if publisher is not None:
            publisher.close()
        # The pools stay open: kombu keeps one per broker for the whole process, and the next
        # test on this broker takes it up again.
        app.conf.update(saved)
        app._pool, app.amqp._producer_pool = saved_pools
        broker._redis_broker.cache_clear()


class LiveSystem:
    """The worker of a test's broker (its methods: ``kill_children``, ``tail``...) and the
    broker's queues."""

    def __init__(self, worker: WorkerProcess, queues: BrokerQueues, broker: str) -> None:
        self.worker, self.queues, self.broker = worker, queues, broker

    def __getattr__(self, name: str):
        return getattr(self.worker, name)


def queues_empty() -> bool:
    return RedisQueues().messages() == 0


@pytest.fixture(scope="session")
def worker_env(django_db_setup, django_db_blocker) -> dict[str, str]:
    from django.db import connection

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": database_url(connection.settings_dict),
        "REDIS_URL": settings.REDIS_URL,
        "PYTHONUNBUFFERED": "1",
    }
    return env


@pytest.fixture(scope="session")
def celery_worker(worker_env) -> Iterator[WorkerProcess]:
    """One worker process for the whole session; tests that kill it get it restarted."""
    ARTIFACTS.mkdir(exist_ok=True)
    get_redis().flushdb()
    worker = WorkerProcess(worker_env, ARTIFACTS / "test-worker.log")
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture(scope="session")
def production_web(worker_env, tmp_path_factory) -> Iterator[WebProcess]:
    """The web as deployed: ``collectstatic``, then ``gunicorn -c config/gunicorn.py config.wsgi``
    with the production settings, on 127.0.0.1 and a free port, against the test database.
    Plain HTTP reaches it as it would behind the TLS-terminating proxy once the redirect is off
    (the browser cannot follow a redirect to an HTTPS that nobody serves here)."""
    ARTIFACTS.mkdir(exist_ok=True)
    env = {
        **worker_env,
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "SECRET_KEY": secrets.token_urlsafe(64),
        # The test worker's key, so that what this web sends is accepted by it.
        "OUTBOX_SIGNING_KEYS": ",".join(settings.OUTBOX_SIGNING_KEYS),
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "false",
        "WEB_CONCURRENCY": "1",
    }
    env = static_collect(env, tmp_path_factory.mktemp("staticfiles"))
    web = WebProcess(env, ARTIFACTS / "test-web.log")
    web.start()
    yield web
    web.stop()


@pytest.fixture(scope="session")
def rabbitmq_url(django_db_setup) -> str:
    """A virtual host named after the test database, which is this checkout's own."""
    from django.db import connection

    vhost = connection.settings_dict["NAME"]
    rabbitmq_vhost_create(vhost)
    return f"{RABBITMQ}/{vhost}"


@pytest.fixture(scope="module")
def rabbitmq_worker(worker_env, rabbitmq_url) -> Iterator[WorkerProcess]:
    """The worker of a module's RabbitMQ runs, started by the first of them and stopped after
    the module: a second live worker would hide from the liveness tests that none is left."""
    ARTIFACTS.mkdir(exist_ok=True)
    worker = WorkerProcess({**worker_env, "CELERY_BROKER_URL": rabbitmq_url}, ARTIFACTS / "test-worker-rabbitmq.log")
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture
def live_system(request, transactional_db, broker) -> Iterator[LiveSystem]:
    """A clean slate for a test that runs messages through the real worker: no faults, empty
    queues; afterwards wait until the worker is idle so the next test starts clean."""
    from common.faults import faults_clear

    if broker == "rabbitmq":
        url = request.getfixturevalue("rabbitmq_url")
        worker = request.getfixturevalue("rabbitmq_worker")
        queues: BrokerQueues = RabbitMQQueues(url, worker)
        switched = celery_app_on(url)
    else:
        worker, queues, switched = request.getfixturevalue("celery_worker"), RedisQueues(), _unchanged()
    faults_clear()
    with switched:
        queues.drop()
        if worker.process is None or worker.process.poll() is not None:
            worker.start()
        yield LiveSystem(worker, queues, broker)
        faults_clear()
        try:
            wait_for(lambda: queues.messages() == 0, timeout=30, message="the worker did not go idle after the test")
        finally:
            queues.drop()
            time.sleep(0.2)  # let a handler that just picked up its message finish before the flush


@contextmanager
def _unchanged() -> Iterator[None]:
    yield


def drop_pending_messages() -> None:
    """Forget queued and unacknowledged messages, keeping kombu's queue bindings (a flushdb
    would drop those, and later messages would vanish into an exchange with no binding)."""
    from outbox.nudge import NUDGE_KEY

    get_redis().delete(*QUEUES, "unacked", "unacked_index", "unacked_mutex", NUDGE_KEY)
