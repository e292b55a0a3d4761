"""The chaos harness: the real system under load and faults, then the consistency auditor.

It runs gunicorn, a Celery worker and beat against a database and a Redis server of their
own, sends orders through the storefront API from concurrent clients (some retrying with the
same idempotency key, some with declined cards, some for a sold-out product, some cancelled
midway) while it injects faults: duplicate and reordered delivery, transient gateway and
carrier errors, gateway timeouts after the charge was made, SIGKILL of worker children and of
the whole worker (relay included), Redis restarts and terminated PostgreSQL connections.
Then it stops the faults, waits until every saga is terminal or flagged stuck, and audits.
"""

import http.client
import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from django.contrib.auth import get_user_model
from django.db import close_old_connections, connection
from django.db.models import Count
from redis import Redis

from audit.services import audit_run
from common.faults import faults_clear, faults_set
from common.redis import get_redis
from devtools.benchmarking import percentile
from devtools.launcher import EmbeddedRedis
from devtools.processes import ROOT, WebProcess, WorkerProcess, static_collect, wait_for
from inventory.services import product_upsert, stock_receive
from orders.api.tokens import api_token_issue
from orders.models import Order
from outbox.consumer import DUPLICATES_KEY
from sagas.models import SagaEvent, SagaInstance, SagaState

logger = logging.getLogger(__name__)
HARNESS_APP_NAME = "chaos-harness"


@dataclass
class ChaosPlan:
    orders: int = 200
    rate: float = 50.0
    clients: int = 8
    duplicate_delivery: float = 0.1
    reorder_delivery: float = 0.1
    gateway_transient: float = 0.05
    gateway_timeout_after_charge: float = 0.05
    carrier_transient: float = 0.05
    declined: float = 0.05
    sold_out: float = 0.03
    cancel: float = 0.05
    client_retry: float = 0.1
    kill_every: tuple[float, float] = (1.0, 2.0)
    worker_restart_every: float = 30.0
    redis_restarts: int = 1
    pg_terminate_every: float = 3.0
    quiesce_timeout: float = 240.0
    concurrency: int = 4


@dataclass
class ChaosTally:
    placed: int = 0
    api_errors_retried: int = 0
    idempotent_replays: int = 0
    idempotency_mismatches: int = 0
    cancels_requested: int = 0
    worker_children_killed: int = 0
    worker_restarts: int = 0
    redis_restarts: int = 0
    pg_terminated: int = 0
    post_latencies_ms: list[float] = field(default_factory=list)
    order_ids: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RestartableRedis:
    """A redis-server on a fixed port that can be killed and started again, losing everything
    it held (queued and unacknowledged messages included), as a crashed broker does."""

    def __init__(self, port: int, directory: Path) -> None:
        self.port = port
        self.directory = directory
        self.process: subprocess.Popen | None = None

    def start(self) -> None:

        self.directory.mkdir(parents=True, exist_ok=True)
        binary = "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else str(EmbeddedRedis.executable())
        with open(self.directory / "redis.log", "ab") as log:
            self.process = subprocess.Popen(
                [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
                 "--dir", str(self.directory)],
                stdout=log, stderr=log, start_new_session=True,
            )  # fmt: skip

        client = Redis(port=self.port, socket_connect_timeout=0.5)
        wait_for(lambda: _pings(client), timeout=15, message="the chaos Redis did not start")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def restart(self, downtime: float = 1.0) -> None:
        self.kill()
        time.sleep(downtime)
        self.start()


def _pings(client) -> bool:
    try:
        return bool(client.ping())
    except Exception:  # noqa: BLE001 - not up yet
        return False


class ChaosSystem:
    """gunicorn, one worker (all queues) and beat, with logs under artifacts/chaos/."""

    def __init__(self, *, concurrency: int, log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.log_dir = log_dir
        # Static files are collected into a folder of the run's own, never into a deployment's.
        self.env = {
            **(os.environ if env is None else env),
            "PYTHONUNBUFFERED": "1",
            "STATIC_ROOT": str(log_dir / "static"),
        }
        self.worker = WorkerProcess(self.env, log_dir / "worker.log", concurrency=concurrency, name="chaos")
        self.web = WebProcess(
            self.env, log_dir / "web.log", args=["--workers", "2", "--threads", "4", "--timeout", "60"]
        )
        self.port = self.web.port
        self.beat: subprocess.Popen | None = None
        self.started_at = 0.0
        # Workers that exited by themselves (not killed by the harness): each one is a finding.
        self.worker_deaths: list[str] = []

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # As a release does: under the production settings gunicorn serves only collected files.
        static_collect(self.env, Path(self.env["STATIC_ROOT"]))
        self.worker.start()
        self.web.start(wait=False)
        self.beat = self._spawn(
            [sys.executable, "-m", "celery", "-A", "config", "beat", "--loglevel", "INFO"],
            "beat.log",
        )  # fmt: skip
        wait_for(self._healthy, timeout=60, interval=0.5, message="the chaos system never became healthy")

    def _spawn(self, argv: list[str], log_name: str) -> subprocess.Popen:
        log = open(self.log_dir / log_name, "ab")
        return subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=log, stderr=log, start_new_session=True)

    def _healthy(self) -> bool:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            conn.request("GET", "/healthz")
            return conn.getresponse().status == 200
        except OSError:
            return False

    def kill_worker(self) -> None:
        """SIGKILL the whole worker: its main process (and with it the relay and every child)."""
        if self.worker.process is not None:
            if self.worker.process.poll() is None:
                os.killpg(self.worker.process.pid, signal.SIGKILL)
                self.worker.process.wait(timeout=10)
            self.worker.process = None
            self.worker.log.close()

    def ensure_worker(self, *, wait: bool = False) -> bool:
        """Start the worker again if it is gone; returns True when it had to.

        A worker the harness killed is restarted as planned. One that exited by itself is a
        death, recorded with its exit code and last error, then restarted too so that the run
        goes on: in production nothing guarantees that a supervisor is there to do so.
        """
        if self.worker.running:
            return False
        if self.worker.process is not None:
            self.worker_deaths.append(self._death_note())
            logger.error("the worker died by itself", extra={"death": self.worker_deaths[-1]})
            self.worker.process = None
            self.worker.log.close()
        self.worker.start(wait=wait)
        self.started_at = time.monotonic()
        return True

    def _death_note(self) -> str:
        assert self.worker.process is not None
        lines = self.worker.tail(400).splitlines()
        cause = next((line for line in reversed(lines) if "Unrecoverable error" in line), lines[-1] if lines else "")
        return f"exit code {self.worker.process.returncode}: {cause[:300]}"

    def stop(self) -> None:
        self.web.stop()
        if self.beat is not None and self.beat.poll() is None:
            os.killpg(self.beat.pid, signal.SIGTERM)
            try:
                self.beat.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.beat.pid, signal.SIGKILL)
        if self.worker.running:
            self.worker.stop()


class StorefrontClient:
    """One storefront client: its token, and a keep-alive HTTP connection per thread."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.token = token
        self._local = threading.local()

    @property
    def conn(self) -> http.client.HTTPConnection | None:
        return getattr(self._local, "conn", None)

    @conn.setter
    def conn(self, value: http.client.HTTPConnection | None) -> None:
        self._local.conn = value

    def request(self, method: str, path: str, body: dict | None = None, key: str | None = None) -> tuple[int, bytes]:
        headers = {"Authorization": f"Token {self.token}", "Content-Type": "application/json"}
        if key is not None:
            headers["Idempotency-Key"] = key
        payload = json.dumps(body).encode() if body is not None else None
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            self.conn.request(method, path, body=payload, headers=headers)
            response = self.conn.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException):
            if self.conn is not None:
                self.conn.close()
            self.conn = None
            return 0, b""

    def until_answered(self, method: str, path: str, tally: ChaosTally, **kwargs) -> tuple[int, bytes]:
        """Retry what a real client retries (no answer, 409 in flight, 5xx, 429) with the same key."""
        deadline = time.monotonic() + 120
        while True:
            status, body = self.request(method, path, **kwargs)
            if status not in (0, 409, 429) and status < 500:
                return status, body
            if method == "POST" and path.endswith("/cancel/") and status == 409:
                return status, body  # the order can no longer be cancelled: an answer, not an error
            if time.monotonic() > deadline:
                return status, body
            with tally.lock:
                tally.api_errors_retried += 1
            time.sleep(random.uniform(0.05, 0.3))


class ChaosRun:
    def __init__(self, plan: ChaosPlan, *, redis: RestartableRedis, system: ChaosSystem) -> None:
        self.plan = plan
        self.redis = redis
        self.system = system
        self.tally = ChaosTally()
        self.stop_faults = threading.Event()
        self.interrupted = threading.Event()
        self.injector_failed: list[str] = []

    # -- set-up ---------------------------------------------------------------------------
    def seed(self) -> list[str]:

        stock_receive(product=product_upsert(sku="CHAOS-1", name="Chaos coffee", price_amount=1500), quantity=10**7)
        sold_out = product_upsert(sku="CHAOS-RARE", name="Rare kettle", price_amount=9900)
        stock_receive(product=sold_out, quantity=max(1, self.plan.orders // 100))
        tokens = []
        for index in range(self.plan.clients):
            user = get_user_model().objects.create_user(f"chaos-client-{index}", password=None)
            tokens.append(api_token_issue(user=user))
        return tokens

    # -- faults ---------------------------------------------------------------------------
    def inject_faults(self) -> None:
        plan = self.plan
        faults_set(**self._fault_rates())
        expected_seconds = plan.orders / plan.rate
        redis_restart_at = sorted(
            time.monotonic() + expected_seconds * (i + 1) / (plan.redis_restarts + 1)
            for i in range(plan.redis_restarts)
        )
        next_kill = time.monotonic() + random.uniform(*plan.kill_every)
        next_restart = time.monotonic() + plan.worker_restart_every
        next_terminate = time.monotonic() + plan.pg_terminate_every
        while not self.stop_faults.wait(0.1):
            now = time.monotonic()
            try:
                if redis_restart_at and now >= redis_restart_at[0]:
                    redis_restart_at.pop(0)
                    self.redis.restart()
                    faults_set(**self._fault_rates())  # the restart lost them with everything else
                    self.tally.redis_restarts += 1
                self.system.ensure_worker()
                if now - self.system.started_at < 3:
                    continue  # let a (re)started worker bring its pool up before killing again
                if now >= next_restart:
                    next_restart = now + plan.worker_restart_every
                    self.system.kill_worker()
                    self.system.ensure_worker()
                    self.tally.worker_restarts += 1
                elif now >= next_kill and self.system.worker.running:
                    next_kill = now + random.uniform(*plan.kill_every)
                    self.tally.worker_children_killed += self.system.worker.kill_one_child()
                if now >= next_terminate:
                    next_terminate = now + plan.pg_terminate_every
                    self.tally.pg_terminated += self._terminate_connections()
            except Exception as exc:  # noqa: BLE001 - the injector keeps going; the failure is reported
                self.injector_failed.append(f"{type(exc).__name__}: {exc}")
                close_old_connections()

    def _fault_rates(self) -> dict[str, float]:
        plan = self.plan
        return {
            "duplicate_delivery": plan.duplicate_delivery,
            "reorder_delivery": plan.reorder_delivery,
            "gateway_transient": plan.gateway_transient,
            "gateway_timeout_after_charge": plan.gateway_timeout_after_charge,
            "carrier_transient": plan.carrier_transient,
        }

    def _terminate_connections(self) -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND backend_type = 'client backend' AND application_name <> %s",
                [HARNESS_APP_NAME],
            )
            return cursor.fetchone()[0]

    # -- load -----------------------------------------------------------------------------
    def place_orders(self, tokens: list[str]) -> float:
        plan = self.plan
        clients = [StorefrontClient(self.system.port, token) for token in tokens]
        started = time.monotonic()

        def one(index: int) -> None:
            client = clients[index % len(clients)]
            delay = started + index / plan.rate - time.monotonic()
            if delay > 0 and self.interrupted.wait(delay):
                return
            self._order(client)

        pool = ThreadPoolExecutor(max_workers=plan.clients * 2)
        try:
            for future in [pool.submit(one, i) for i in range(plan.orders)]:
                future.result()
        except BaseException:
            # Interrupted: orders not yet started are dropped, and those waiting for their
            # slot give up, so that the run stops now rather than after the whole schedule.
            self.interrupted.set()
            self.stop_faults.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown()
        return started

    def _order(self, client: StorefrontClient) -> None:
        plan = self.plan
        roll = random.random()
        token, sku = "tok_visa", "CHAOS-1"
        if roll < plan.declined:
            token = "tok_chargeDeclined"
        elif roll < plan.declined + plan.sold_out:
            sku = "CHAOS-RARE"
        body = {
            "customer": {"email": "chaos@example.com", "name": "Chaos Client"},
            "lines": [{"sku": sku, "quantity": random.randint(1, 3)}],
            "payment": {"token": token},
            "shipping_address": {"line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE"},
        }
        key = f"chaos-{uuid.uuid4()}"
        sent = time.monotonic()
        status, answer = client.until_answered("POST", "/api/v1/orders/", self.tally, body=body, key=key)
        latency = (time.monotonic() - sent) * 1000
        if status != 202:
            logger.error("order not accepted", extra={"status": status, "body": answer[:300]})
            return
        order_id = json.loads(answer)["id"]
        with self.tally.lock:
            self.tally.placed += 1
            self.tally.post_latencies_ms.append(latency)
            self.tally.order_ids.append(order_id)
        if random.random() < plan.client_retry:  # the client lost the answer and sends it again
            again_status, again = client.until_answered("POST", "/api/v1/orders/", self.tally, body=body, key=key)
            with self.tally.lock:
                self.tally.idempotent_replays += 1
                if (again_status, again) != (status, answer):
                    self.tally.idempotency_mismatches += 1
        if random.random() < plan.cancel:
            time.sleep(random.uniform(0.0, 0.5))
            client.until_answered("POST", f"/api/v1/orders/{order_id}/cancel/", self.tally, body={})
            with self.tally.lock:
                self.tally.cancels_requested += 1

    # -- after ----------------------------------------------------------------------------
    def quiesce(self) -> bool:
        """Faults off, every process up; wait until each saga is terminal or stuck with a reason."""

        faults_clear()
        for _ in range(5):  # a worker whose pool was being killed as it started may give up
            self.system.ensure_worker()
            try:
                self.system.worker.wait_ready()
                break
            except AssertionError:
                continue

        def settled() -> bool:
            try:
                close_old_connections()
                return not SagaInstance.objects.filter(
                    state__in=[SagaState.RUNNING, SagaState.COMPENSATING], stuck=False
                ).exists()
            except Exception:  # noqa: BLE001 - a terminated connection: ask again
                connection.close()
                return False

        try:
            wait_for(settled, timeout=self.plan.quiesce_timeout, interval=0.5)
            return True
        except AssertionError:
            return False

    def summary(self, started: float, settled: bool) -> dict:

        report = audit_run(full=True)
        states = dict(SagaInstance.objects.values_list("state").annotate(n=Count("id")))
        statuses = dict(Order.objects.values_list("status").annotate(n=Count("id")))
        finished = SagaInstance.objects.filter(finished_at__isnull=False)
        last = finished.order_by("-finished_at").values_list("finished_at", flat=True).first()
        first = SagaInstance.objects.order_by("created_at").values_list("created_at", flat=True).first()
        span = (last - first).total_seconds() if last and first else 0.0
        stuck_without_reason = SagaInstance.objects.filter(stuck=True, stuck_reason="").count()
        latencies = sorted(self.tally.post_latencies_ms)

        return {
            "orders": self.tally.placed,
            "confirmed": statuses.get("confirmed", 0),
            "cancelled": statuses.get("cancelled", 0),
            "pending": statuses.get("pending", 0),
            "saga_states": states,
            "stuck": SagaInstance.objects.filter(stuck=True).exclude(state__in=[SagaState.COMPLETED]).count(),
            "stuck_without_reason": stuck_without_reason,
            "settled": settled,
            "violations": len(report.findings),
            "violation_kinds": report.counts,
            "idempotency_mismatches": self.tally.idempotency_mismatches,
            "duplicates_absorbed": _duplicates_absorbed(),
            "worker_children_killed": self.tally.worker_children_killed,
            "worker_restarts": self.tally.worker_restarts,
            "worker_deaths": len(self.system.worker_deaths),
            "worker_death_causes": self.system.worker_deaths[:5],
            "redis_restarts": self.tally.redis_restarts,
            "pg_connections_terminated": self.tally.pg_terminated,
            "api_retries": self.tally.api_errors_retried,
            "idempotent_replays": self.tally.idempotent_replays,
            "cancels_requested": self.tally.cancels_requested,
            "injector_errors": self.injector_failed[:5],
            "sagas_per_s": round(finished.count() / span, 1) if span else 0.0,
            "api_p50_ms": round(percentile(latencies, 0.5), 1) if latencies else None,
            "api_p99_ms": round(percentile(latencies, 0.99), 1) if latencies else None,
        }


def _duplicates_absorbed() -> int:
    """Deliveries the inboxes absorbed: the consumer counts them in Redis (lost on a restart,
    so a lower bound), plus the stale and duplicate replies the orchestrator ignored."""

    try:
        counted = int(get_redis().get(DUPLICATES_KEY) or 0)
    except Exception:  # noqa: BLE001
        counted = 0
    return counted + SagaEvent.objects.filter(kind="reply_ignored").count()


def harness_connection_name() -> None:
    """Mark this thread's database connection as the harness's, so fault injection spares it."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('application_name', %s, false)", [HARNESS_APP_NAME])
