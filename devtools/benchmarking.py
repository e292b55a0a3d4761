"""Running a benchmark against the real system in databases of its own.

A benchmark command re-runs itself in a child process whose DATABASE_URL and REDIS_URL
point at a fresh, migrated PostgreSQL database and a Redis database of its own, so that it
neither reads nor disturbs the data of a running system. Worker processes it starts get
the same environment.
"""

import os
import secrets
import signal
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import psycopg
from django.conf import settings
from django.db import connection
from redis import Redis

from devtools.processes import ROOT, WorkerProcess, database_url

CHILD_FLAG = "BACKOFFICE_BENCH_CHILD"


def in_bench_child() -> bool:
    return os.environ.get(CHILD_FLAG) == "1"


def stop_on_signals() -> None:
    """In a benchmark's child: the first SIGINT or SIGTERM stops the run as Ctrl-C does, so
    that its ``finally`` blocks stop the processes it started; later ones are ignored, so that
    they cannot cut that clean-up short."""

    def stop(signum: int, frame: object) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt(f"stopped by signal {signum}")

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)


def rerun_isolated(
    argv: Sequence[str],
    *,
    name: str,
    redis_db: int = 0,
    redis_url: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> int:
    """Create (afresh) and migrate ``<database>_<name>``, then run ``manage.py argv`` against it.

    ``redis_url`` names a Redis the child starts itself (the chaos harness restarts its own);
    otherwise the child gets database ``redis_db`` of the configured server, emptied first."""
    base = dict(connection.settings_dict)
    bench_name = f"{base['NAME']}_{name}"[:63]
    admin = {**base, "NAME": "postgres"}
    with psycopg.connect(database_url(admin), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{bench_name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{bench_name}"')
    own_redis = redis_url is not None
    redis_url = redis_url or settings.REDIS_URL.rsplit("/", 1)[0] + f"/{redis_db}"
    env = {
        **os.environ,
        # Measured as deployed: production settings (DEBUG off: no query log in memory), with
        # the developer tools installed for the measuring command (config/settings/measured.py).
        "DJANGO_SETTINGS_MODULE": "config.settings.measured",
        "SECRET_KEY": os.environ.get("SECRET_KEY") or secrets.token_urlsafe(64),
        "OUTBOX_SIGNING_KEYS": os.environ.get("OUTBOX_SIGNING_KEYS") or secrets.token_urlsafe(48),
        "SECURE_SSL_REDIRECT": "false",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        CHILD_FLAG: "1",
        "DATABASE_URL": database_url({**base, "NAME": bench_name}),
        "REDIS_URL": redis_url,
        "CELERY_BROKER_URL": redis_url,
        "LOG_LEVEL": "WARNING",
        # Customer emails go nowhere: printing thousands of them would measure the terminal.
        "EMAIL_BACKEND": "django.core.mail.backends.dummy.EmailBackend",
        "PYTHONUNBUFFERED": "1",
        **(extra_env or {}),
    }
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], env=env, check=True, cwd=ROOT)
    if not own_redis:
        Redis.from_url(redis_url).flushdb()
    return _run_child([*manage, *argv], env)


def _run_child(command: list[str], env: dict[str, str]) -> int:
    """Run the child to its end. Interrupted (Ctrl-C, or SIGTERM to this process), pass the
    stop on and wait while the child stops the processes it started; killing it at once, as
    ``subprocess.run`` does, would leave them running."""
    child = subprocess.Popen(command, env=env, cwd=ROOT)

    def forward(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        return child.wait()
    except KeyboardInterrupt:
        child.send_signal(signal.SIGTERM)  # a no-op for a child that is already stopping
        try:
            child.wait(timeout=120)
        except subprocess.TimeoutExpired:
            child.kill()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


def bench_workers(*, concurrency: int, log_dir: Path | None = None) -> WorkerProcess:
    """One worker process for the relay queue and every context, as ``make run`` starts it."""
    log_dir = log_dir or ROOT / "artifacts"
    log_dir.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    worker = WorkerProcess(env, log_dir / "bench-worker.log", concurrency=concurrency, name="bench")
    worker.start()
    return worker


def percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[max(0, min(998, round(fraction * 1000) - 1))]


def collect_static_for_run() -> None:
    """In a benchmark's child, which renders admin pages with the production settings: their
    static files come from collectstatic's manifest, made here into a folder of the run's own
    (removed when the process ends)."""
    import atexit
    import shutil
    import tempfile

    from django.core.management import call_command
    from django.test import override_settings

    if "Manifest" not in settings.STORAGES.get("staticfiles", {}).get("BACKEND", ""):
        return  # the development and test settings serve the apps' static files as they are
    root = tempfile.mkdtemp(prefix="bench-static-")
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    override_settings(STATIC_ROOT=root).enable()
    call_command("collectstatic", "--noinput", "-v", "0")
