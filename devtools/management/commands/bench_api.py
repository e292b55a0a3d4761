"""Load benchmark of the storefront API over real HTTP (gunicorn), with the workers running.

Prints as its last line ``orders_per_s=... p50_ms=... p99_ms=... sagas_per_s=...``: orders
accepted per second at full speed from concurrent clients, API latency at half that rate once
the backlog of the burst has drained, and sagas completed per second over the run. It runs in a
database of its own.
"""

import http.client
import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from devtools.benchmarking import in_bench_child, percentile, rerun_isolated, stop_on_signals
from devtools.chaos import ChaosSystem, StorefrontClient
from devtools.processes import ROOT, wait_for
from inventory.services import product_upsert, stock_receive
from orders.api.tokens import api_token_issue
from sagas.models import SagaInstance, SagaState

BODY = {
    "customer": {"email": "bench@example.com", "name": "Bench Client"},
    "lines": [{"sku": "BENCH-API", "quantity": 1}],
    "payment": {"token": "tok_visa"},
    "shipping_address": {"line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE"},
}


class Command(BaseCommand):
    help = "Measure orders accepted per second through the REST API over HTTP (own database)."

    def add_arguments(self, parser):
        parser.add_argument("--orders", type=int, default=2000)
        parser.add_argument("--clients", type=int, default=16, help="concurrent HTTP clients")
        parser.add_argument("--concurrency", type=int, default=4, help="worker pool processes")
        parser.add_argument("--latency-seconds", type=float, default=10.0)
        parser.add_argument(
            "--healthz-callers",
            type=int,
            default=0,
            help="anonymous callers of /healthz while latency is measured (monitors, or anyone polling it)",
        )
        parser.add_argument(
            "--healthz-interval", type=float, default=0.1, help="seconds between one caller's calls (0: back to back)"
        )

    def handle(
        self,
        *args,
        orders: int,
        clients: int,
        concurrency: int,
        latency_seconds: float,
        healthz_callers: int,
        healthz_interval: float,
        **options,
    ):
        if not in_bench_child():
            argv = ["bench_api", f"--orders={orders}", f"--clients={clients}", f"--concurrency={concurrency}"]
            argv += [f"--healthz-callers={healthz_callers}", f"--healthz-interval={healthz_interval}"]
            env = {
                "API_THROTTLE_RATE": "1000000/min",
            }
            argv.append(f"--latency-seconds={latency_seconds}")
            raise SystemExit(rerun_isolated(argv, name="bench_api", redis_db=14, extra_env=env))
        stop_on_signals()
        tokens = self._seed(clients)
        system = ChaosSystem(concurrency=concurrency, log_dir=ROOT / "artifacts" / "bench_api")
        system.start()
        try:
            started = time.monotonic()
            self._load(system.port, tokens, count=min(100, orders), rate=None)  # warm up
            peak, _ = self._load(system.port, tokens, count=orders, rate=None)
            rate = peak / 2
            # Latency is measured at a steady load, not in the backlog the burst left behind.
            self._drain()
            with _HealthPollers(system.port, healthz_callers, interval=healthz_interval) as pollers:
                _, latencies = self._load(system.port, tokens, count=max(1, int(rate * latency_seconds)), rate=rate)
            self._drain()
            completed = SagaInstance.objects.filter(state=SagaState.COMPLETED).count()
            last = SagaInstance.objects.order_by("-finished_at").values_list("finished_at", flat=True).first()
            first = SagaInstance.objects.order_by("created_at").values_list("created_at", flat=True).first()
            sagas_per_s = completed / max((last - first).total_seconds(), 0.001)
        finally:
            system.stop()
        self.stdout.write(
            f"orders={orders} clients={clients} workers={concurrency} latency_sample={len(latencies)} at {rate:.0f}/s"
            f" wall={time.monotonic() - started:.0f}s"
            + (
                f" healthz_callers={healthz_callers} every {healthz_interval}s healthz_calls={len(pollers.latencies)}"
                f" healthz_p50_ms={percentile(pollers.latencies, 0.5):.1f}"
                if healthz_callers
                else ""
            )
        )
        self.stdout.write(
            f"orders_per_s={peak:.0f} p50_ms={percentile(latencies, 0.5):.1f} p99_ms={percentile(latencies, 0.99):.1f}"
            f" sagas_per_s={sagas_per_s:.1f}"
        )

    def _drain(self) -> None:
        wait_for(lambda: not SagaInstance.objects.filter(state=SagaState.RUNNING).exists(), timeout=600, interval=0.5)

    def _seed(self, clients: int) -> list[str]:

        stock_receive(product=product_upsert(sku="BENCH-API", name="Bench", price_amount=1000), quantity=10**8)
        users = [get_user_model().objects.create_user(f"bench-client-{i}", password=None) for i in range(clients)]
        return [api_token_issue(user=user) for user in users]

    def _load(self, port: int, tokens: list[str], *, count: int, rate: float | None) -> tuple[float, list[float]]:
        """Send ``count`` orders from one thread per token; at ``rate`` per second, or flat out."""
        latencies: list[float] = []
        started = time.monotonic()

        def run(index: int) -> None:
            client = StorefrontClient(port, tokens[index])
            for n in range(index, count, len(tokens)):
                if rate is not None:
                    time.sleep(max(0.0, started + n / rate - time.monotonic()))
                sent = time.monotonic()
                status, body = client.request("POST", "/api/v1/orders/", body=BODY, key=str(uuid.uuid4()))
                if status != 202:
                    raise RuntimeError(f"order refused: {status} {body[:200]!r}")
                latencies.append((time.monotonic() - sent) * 1000)
                json.loads(body)

        with ThreadPoolExecutor(max_workers=len(tokens)) as pool:
            for future in [pool.submit(run, i) for i in range(len(tokens))]:
                future.result()
        return count / (time.monotonic() - started), sorted(latencies)


class _HealthPollers:
    """``count`` threads calling ``GET /healthz`` without credentials every ``interval`` seconds
    (0: back to back) until the block they wrap ends."""

    def __init__(self, port: int, count: int, *, interval: float) -> None:
        self.port, self.count, self.interval = port, count, interval
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> "_HealthPollers":
        for _ in range(self.count):
            thread = threading.Thread(target=self._poll, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self.latencies.sort()

    def _poll(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                connection.request("GET", "/healthz")
                connection.getresponse().read()
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                continue
            self.latencies.append((time.monotonic() - sent) * 1000)
            self._stop.wait(max(0.0, sent + self.interval - time.monotonic()))
        connection.close()
