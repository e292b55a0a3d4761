"""Fixtures that run the real system for tests: a Celery worker process against the real
Redis broker and the test PostgreSQL database (no eager mode)."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings

from config.celery import app as celery_app
from config.redis import get_redis

ROOT = Path(__file__).resolve().parent
ARTIFACTS = ROOT / "artifacts"
QUEUES = ["default", "relay", *settings.MESSAGE_QUEUES]


def database_url(settings_dict: dict) -> str:
    user = quote(settings_dict.get("USER") or "postgres")
    password = settings_dict.get("PASSWORD") or ""
    auth = f"{user}:{quote(password)}" if password else user
    host = settings_dict.get("HOST") or ""
    port = settings_dict.get("PORT") or ""
    name = settings_dict["NAME"]
    if host.startswith("/"):
        return f"postgres://{auth}@/{name}?host={quote(host)}" + (f"&port={port}" if port else "")
    return f"postgres://{auth}@{host or '127.0.0.1'}{':' + str(port) if port else ''}/{name}"


class WorkerProcess:
    """A real ``celery worker`` process (prefork, two children) for the test database."""

    def __init__(self, env: dict[str, str], log_path: Path, concurrency: int = 2) -> None:
        self.env = env
        self.log_path = log_path
        self.concurrency = concurrency
        self.process: subprocess.Popen | None = None
        self.name = f"testworker-{os.getpid()}-{int(time.time() * 1000)}@localhost"

    def start(self) -> None:
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "config", "worker",
                "--queues", ",".join(QUEUES),
                "--concurrency", str(self.concurrency),
                "--pool", "prefork",
                "--hostname", self.name,
                "--without-gossip", "--without-mingle", "--without-heartbeat",
                "--loglevel", "INFO",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self.wait_ready()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, self.tail()
            if celery_app.control.ping(destination=[self.name], timeout=0.5):
                return
        raise AssertionError(f"the worker did not answer within {timeout} s\n{self.tail()}")

    def children(self) -> list[int]:
        import psutil

        assert self.process is not None
        return [child.pid for child in psutil.Process(self.process.pid).children()]

    def kill_children(self) -> list[int]:
        """SIGKILL every pool child, as the OOM killer or a crash would."""
        pids = self.children()
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        return pids

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.process = None
        self.log.close()

    def restart(self) -> None:
        self.stop()
        self.start()

    def tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def queues_empty() -> bool:
    redis = get_redis()
    pending = sum(redis.llen(queue) for queue in QUEUES)
    return pending == 0 and redis.hlen("unacked") == 0


def wait_for(predicate: Callable[[], object], *, timeout: float = 30, interval: float = 0.1, message: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(message or f"condition not met within {timeout} s")


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


@pytest.fixture
def live_system(transactional_db, celery_worker) -> Iterator[WorkerProcess]:
    """A clean slate for a test that runs messages through the real worker: no faults, empty
    queues; afterwards wait until the worker is idle so the next test starts clean."""
    from config.faults import faults_clear

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
    from outbox.publishing import NUDGE_KEY

    get_redis().delete(*QUEUES, "unacked", "unacked_index", "unacked_mutex", NUDGE_KEY)
