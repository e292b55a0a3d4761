"""Benchmark of the messaging backbone on real worker processes.

Prints as its last line ``relay_msgs_per_s=... e2e_msgs_per_s=... p50_ms=... p99_ms=...``:
- relay: claim, send and mark of N committed messages by one relay;
- end to end: N messages published in transactions of 100 (each commit nudges the relay, as in
  production), from the first commit to the last one handled through the inbox by the workers;
- latency: from commit to handled, at a steady rate of half the end-to-end peak.
"""

import time
import uuid

from django.core.management.base import BaseCommand
from django.db import connection, transaction

from common.redis import get_redis
from devtools.benchmarking import bench_workers, in_bench_child, percentile, rerun_isolated, stop_on_signals
from devtools.processes import wait_for
from outbox.models import InboxMessage, OutboxMessage
from outbox.nudge import NUDGE_KEY
from outbox.publishing import publish
from outbox.relay import relay_drain


class Command(BaseCommand):
    help = "Measure relay throughput, end-to-end throughput and latency of the outbox (own database)."

    def add_arguments(self, parser):
        parser.add_argument("--messages", type=int, default=5000)
        parser.add_argument("--concurrency", type=int, default=4, help="worker pool processes")
        parser.add_argument("--latency-seconds", type=float, default=5.0)

    def handle(self, *args, messages: int, concurrency: int, latency_seconds: float, **options):
        if not in_bench_child():
            argv = ["bench_outbox", f"--messages={messages}", f"--concurrency={concurrency}"]
            code = rerun_isolated([*argv, f"--latency-seconds={latency_seconds}"], name="bench_outbox", redis_db=14)
            raise SystemExit(code)
        stop_on_signals()
        worker = bench_workers(concurrency=concurrency)
        try:
            self._warm_up()
            relay_rate = self._relay(messages)
            e2e_rate = self._end_to_end(messages)
            p50, p99, sent = self._latency(rate=e2e_rate / 2, seconds=latency_seconds)
        finally:
            worker.stop()
        self.stdout.write(
            f"messages={messages} workers={concurrency} latency_sample={sent} at {e2e_rate / 2:.0f} msgs/s"
        )
        self.stdout.write(
            f"relay_msgs_per_s={relay_rate:.0f} e2e_msgs_per_s={e2e_rate:.0f} p50_ms={p50:.1f} p99_ms={p99:.1f}"
        )

    def _handled(self) -> int:
        return InboxMessage.objects.filter(consumer="default").count()

    def _warm_up(self) -> None:
        for _ in range(200):
            self._publish_one()
        wait_for(lambda: self._handled() >= 200, timeout=60)
        self._reset()

    def _reset(self) -> None:
        InboxMessage.objects.all().delete()
        OutboxMessage.objects.all().delete()

    def _publish_one(self) -> OutboxMessage:
        with transaction.atomic():
            return publish(type="ping", destination="default", payload={}, aggregate="bench", aggregate_id=uuid.uuid4())

    def _relay(self, count: int) -> float:
        """Messages already committed; one relay drains them with nudges held off."""
        get_redis().set(NUDGE_KEY, "1", px=600_000)
        for start in range(0, count, 500):
            with transaction.atomic():
                OutboxMessage.objects.bulk_create(
                    OutboxMessage(
                        type="ping", destination="default", aggregate="bench", aggregate_id=str(i), payload={}
                    )
                    for i in range(start, min(count, start + 500))
                )
        started = time.perf_counter()
        sent = relay_drain(max_seconds=600)
        elapsed = time.perf_counter() - started
        assert sent == count, f"relayed {sent} of {count}"
        wait_for(lambda: self._handled() >= count, timeout=600, interval=0.2)
        get_redis().delete(NUDGE_KEY)
        self._reset()
        return count / elapsed

    def _end_to_end(self, count: int) -> float:
        started = time.perf_counter()
        for start in range(0, count, 100):
            with transaction.atomic():
                for i in range(start, min(count, start + 100)):
                    publish(type="ping", destination="default", payload={}, aggregate="bench", aggregate_id=i)
        wait_for(lambda: self._handled() >= count, timeout=600, interval=0.02)
        elapsed = time.perf_counter() - started
        self._reset()
        return count / elapsed

    def _latency(self, *, rate: float, seconds: float) -> tuple[float, float, int]:
        interval = 1.0 / max(rate, 1.0)
        committed: dict[str, float] = {}
        started = time.perf_counter()
        next_at = started
        while time.perf_counter() - started < seconds:
            message = self._publish_one()
            committed[str(message.message_id)] = time.time()
            next_at += interval
            time.sleep(max(0.0, next_at - time.perf_counter()))
        wait_for(lambda: self._handled() >= len(committed), timeout=120, interval=0.1)
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT message_id::text, extract(epoch FROM received_at) FROM outbox_inboxmessage WHERE consumer = %s",
                ["default"],
            )
            handled = dict(cursor.fetchall())
        latencies = sorted((float(handled[mid]) - at) * 1000 for mid, at in committed.items() if mid in handled)
        return percentile(latencies, 0.5), percentile(latencies, 0.99), len(committed)
