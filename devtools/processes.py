"""Starting and stopping real Celery worker and gunicorn processes, for tests and benchmarks."""

import functools
import http.client
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote, urlsplit

import psutil
from celery import Celery
from celery import current_app as celery_app
from django.conf import settings
from redis.exceptions import RedisError

from devtools.launcher import free_port

ROOT = Path(__file__).resolve().parent.parent
ALL_QUEUES = ["default", "relay", *settings.MESSAGE_QUEUES]


class _LoggedProcess:
    """A child process in a process group of its own, writing to ``log_path``: stopped with
    SIGTERM to its group (SIGKILL after 20 s), its log's end readable for failure messages."""

    process: subprocess.Popen | None
    log_path: Path

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

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

    def tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class WorkerProcess(_LoggedProcess):
    """A ``celery worker`` process (prefork) with its own log file."""

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        *,
        concurrency: int = 2,
        queues: list[str] | None = None,
        name: str = "worker",
    ) -> None:
        self.env = env
        self.log_path = log_path
        self.concurrency = concurrency
        self.queues = queues or ALL_QUEUES
        self.process: subprocess.Popen | None = None
        self.name = f"{name}-{os.getpid()}-{int(time.time() * 1000)}@localhost"
        # The broker the worker is told to use, which need not be this process's own (a test
        # that restarts a Redis of its own); None: the same as this process's.
        self.broker_url = env.get("CELERY_BROKER_URL") or env.get("REDIS_URL")

    def start(self, *, wait: bool = True) -> None:
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "config", "worker",
                "--queues", ",".join(self.queues),
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
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, self.tail()
            try:
                # A connection of its own, not the pool's: after a broker restart a pooled one
                # is stale.
                app = control_app(self.broker_url)
                with app.connection_for_write() as connection:
                    if app.control.ping(destination=[self.name], timeout=0.5, connection=connection):
                        return
            except (OSError, RedisError):
                time.sleep(0.2)
        raise AssertionError(f"the worker did not answer within {timeout} s\n{self.tail()}")

    def children(self) -> list[int]:

        assert self.process is not None
        return [child.pid for child in psutil.Process(self.process.pid).children()]

    def kill_children(self) -> list[int]:
        """SIGKILL every pool child, as the OOM killer or a crash would."""
        pids = self.children()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return pids

    def kill_one_child(self) -> int:
        """SIGKILL one pool child, chosen at random; returns how many were killed (0 or 1)."""

        pids = self.children()
        if not pids:
            return 0
        try:
            os.kill(random.choice(pids), signal.SIGKILL)
        except ProcessLookupError:
            return 0
        return 1


class AnalyticsConsumerProcess(_LoggedProcess):
    """``manage.py analytics_consume``: the live analytics consumer, a process of its own."""

    def __init__(self, env: dict[str, str], log_path: Path, *, batch_size: int = 1000) -> None:
        self.env = env
        self.log_path = log_path
        self.batch_size = batch_size
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "analytics_consume", "--batch-size", str(self.batch_size)],
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        """SIGKILL, as a host that loses power: no clean stop, no last commit."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None
        self.log.close()


def static_collect(env: dict[str, str], static_root: Path) -> dict[str, str]:
    """Run ``collectstatic`` into ``static_root`` as a release does, and return ``env`` with
    ``STATIC_ROOT`` pointing there: under the production settings gunicorn serves only what was
    collected, and renders no page that links a file missing from the manifest."""
    env = {**env, "STATIC_ROOT": str(static_root)}
    subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "collectstatic", "--noinput", "--clear", "-v", "0"],
        cwd=ROOT,
        env=env,
        check=True,
    )
    return env


class WebProcess(_LoggedProcess):
    """gunicorn as deployed (``gunicorn -c config/gunicorn.py config.wsgi``) on 127.0.0.1 and a
    port of its own, with its log file. ``args`` are appended to the command line, where they
    override the configuration file (workers, threads, timeout)."""

    def __init__(self, env: dict[str, str], log_path: Path, *, args: list[str] | None = None) -> None:

        self.env = env
        self.log_path = log_path
        self.args = args or []
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def start(self, *, wait: bool = True) -> None:
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "gunicorn"), "-c", str(ROOT / "config" / "gunicorn.py"),
                "config.wsgi", "--bind", f"127.0.0.1:{self.port}", *self.args,
            ],
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        if wait:
            wait_for(self.answers, timeout=60, interval=0.2, message=f"gunicorn did not answer\n{self.tail()}")

    def answers(self) -> bool:
        """Whether a worker answers HTTP at all (/healthz, whatever its status: up is not healthy)."""
        assert self.process is not None and self.process.poll() is None, self.tail()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            conn.request("GET", "/healthz")
            conn.getresponse().read()
            return True
        except (OSError, http.client.HTTPException):
            return False


@functools.cache
def control_app(broker_url: str | None) -> Celery:
    """A Celery app to ping workers on ``broker_url`` with; this process's own for None.

    Remote control publishes through the app's producer pool, whatever connection it is given,
    so a worker on another broker (a Redis a test restarts) needs an app of its own."""
    if broker_url is None or broker_url == celery_app.conf.broker_url:
        return celery_app
    app = Celery("backoffice-control", broker=broker_url, set_as_current=False)
    app.conf.accept_content = celery_app.conf.accept_content
    # This process's transport (the repaired Redis one) only for a broker of the same kind: a
    # transport named overrides the URL's scheme.
    if urlsplit(broker_url).scheme == urlsplit(celery_app.conf.broker_url or "").scheme:
        app.conf.broker_transport = celery_app.conf.broker_transport
    return app


def database_url(settings_dict: dict) -> str:
    """A DATABASE_URL for a connection's settings (to hand to worker processes)."""

    user = quote(settings_dict.get("USER") or "postgres")
    password = settings_dict.get("PASSWORD") or ""
    auth = f"{user}:{quote(password)}" if password else user
    host = settings_dict.get("HOST") or ""
    port = settings_dict.get("PORT") or ""
    name = settings_dict["NAME"]
    if host.startswith("/"):
        return f"postgres://{auth}@/{name}?host={quote(host)}" + (f"&port={port}" if port else "")
    return f"postgres://{auth}@{host or '127.0.0.1'}{':' + str(port) if port else ''}/{name}"


def wait_for(predicate, *, timeout: float = 30, interval: float = 0.1, message: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(message or f"condition not met within {timeout} s")
