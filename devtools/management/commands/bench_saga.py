"""Benchmark of the order saga end to end on real worker processes.

Places orders through the order service (not HTTP), runs them through the relay, broker and
workers, and prints as its last line ``sagas_per_s=... p50_ms=... p99_ms=...``: the peak rate
of completed sagas, and the latency from the order's commit to its saga completed at a steady
load of half that peak.
"""

import time
from concurrent.futures import ThreadPoolExecutor

from django.core.management.base import BaseCommand
from django.db import connection

from devtools.benchmarking import bench_workers, in_bench_child, percentile, rerun_isolated, stop_on_signals
from devtools.processes import wait_for
from inventory.services import product_upsert, stock_receive
from orders.services import Customer, LineInput, order_place
from sagas.models import SagaInstance, SagaState

ADDRESS = {"line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE"}


class Command(BaseCommand):
    help = "Measure saga throughput and latency of the order saga (own database)."

    def add_arguments(self, parser):
        parser.add_argument("--orders", type=int, default=1000)
        parser.add_argument("--concurrency", type=int, default=4, help="worker pool processes")
        parser.add_argument("--latency-seconds", type=float, default=10.0)

    def handle(self, *args, orders: int, concurrency: int, latency_seconds: float, **options):
        if not in_bench_child():
            argv = ["bench_saga", f"--orders={orders}", f"--concurrency={concurrency}"]
            code = rerun_isolated([*argv, f"--latency-seconds={latency_seconds}"], name="bench_saga", redis_db=15)
            raise SystemExit(code)
        stop_on_signals()
        product = product_upsert(sku="BENCH-1", name="Bench product", price_amount=1000)
        stock_receive(product=product, quantity=10_000_000)
        worker = bench_workers(concurrency=concurrency)
        try:
            self._run(20)  # warm up
            peak = self._peak(orders)
            p50, p99, placed = self._latency(rate=peak / 2, seconds=latency_seconds)
        finally:
            worker.stop()
        failed = SagaInstance.objects.exclude(state=SagaState.COMPLETED).count()
        self.stdout.write(f"orders={orders} workers={concurrency} latency_sample={placed} not_completed={failed}")
        self.stdout.write(f"sagas_per_s={peak:.1f} p50_ms={p50:.0f} p99_ms={p99:.0f}")

    def _place(self) -> None:
        order_place(
            customer=Customer(email="bench@example.com", name="Bench"),
            lines=[LineInput(sku="BENCH-1", quantity=1)],
            payment_token="tok_visa",
            shipping_address=ADDRESS,
        )

    def _completed(self) -> int:
        return SagaInstance.objects.filter(state=SagaState.COMPLETED).count()

    def _run(self, count: int) -> None:
        """Place ``count`` orders from four threads (as several web processes would) and wait
        until their sagas completed."""
        target = self._completed() + count

        def place(n: int) -> None:
            try:
                for _ in range(n):
                    self._place()
            finally:
                connection.close()

        with ThreadPoolExecutor(max_workers=4) as pool:
            for future in [pool.submit(place, n) for n in _split(count, 4)]:
                future.result()
        wait_for(lambda: self._completed() >= target, timeout=600, interval=0.05)

    def _peak(self, count: int) -> float:
        started = time.perf_counter()
        self._run(count)
        return count / (time.perf_counter() - started)

    def _latency(self, *, rate: float, seconds: float) -> tuple[float, float, int]:
        first_id = SagaInstance.objects.order_by("-created_at").values_list("created_at", flat=True).first()
        interval = 1.0 / max(rate, 0.5)
        placed = 0
        started = next_at = time.perf_counter()
        while time.perf_counter() - started < seconds:
            self._place()
            placed += 1
            next_at += interval
            time.sleep(max(0.0, next_at - time.perf_counter()))
        wait_for(lambda: not SagaInstance.objects.filter(state=SagaState.RUNNING).exists(), timeout=300, interval=0.1)
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT extract(epoch FROM finished_at - created_at) * 1000 FROM sagas_sagainstance"
                " WHERE created_at > %s AND state = 'completed'",
                [first_id],
            )
            latencies = sorted(float(row[0]) for row in cursor.fetchall())
        return percentile(latencies, 0.5), percentile(latencies, 0.99), placed


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]
