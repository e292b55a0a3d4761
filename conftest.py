"""Fixtures that run the real system for tests: a Celery worker process against the real
Redis broker and the test PostgreSQL database (no eager mode)."""

import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from common.redis import get_redis
from devtools.processes import ALL_QUEUES as QUEUES
from devtools.processes import WebProcess, WorkerProcess, database_url, static_collect, wait_for

ROOT = Path(__file__).resolve().parent
ARTIFACTS = ROOT / "artifacts"


def queues_empty() -> bool:
    redis = get_redis()
    pending = sum(redis.llen(queue) for queue in QUEUES)
    return pending == 0 and redis.hlen("unacked") == 0


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


@pytest.fixture
def live_system(transactional_db, celery_worker) -> Iterator[WorkerProcess]:
    """A clean slate for a test that runs messages through the real worker: no faults, empty
    queues; afterwards wait until the worker is idle so the next test starts clean."""
    from common.faults import faults_clear

    faults_clear()
    drop_pending_messages()
    if celery_worker.process is None or celery_worker.process.poll() is not None:
        celery_worker.start()
    yield celery_worker
    faults_clear()
    try:
        wait_for(queues_empty, timeout=30, message="the worker did not go idle after the test")
    finally:
        drop_pending_messages()
        time.sleep(0.2)  # let a handler that just picked up its message finish before the flush


def drop_pending_messages() -> None:
    """Forget queued and unacknowledged messages, keeping kombu's queue bindings (a flushdb
    would drop those, and later messages would vanish into an exchange with no binding)."""
    from outbox.nudge import NUDGE_KEY

    get_redis().delete(*QUEUES, "unacked", "unacked_index", "unacked_mutex", NUDGE_KEY)
