"""Benchmark of the event stream and the analytics read model, on the real RabbitMQ.

Prints as its last lines ``stream_events_per_s=... rebuild_events_per_s=... lag_p99_ms=...`` and
``charts_year_ms=...``:
- stream: N committed integration events published by the relay (batches with publisher
  confirms) to a stream of the benchmark's own;
- rebuild: the read model built from the first event of that stream (``analytics_rebuild``'s
  code), N events folded;
- lag: events written in transactions at a steady rate (``--rate``, 500/s by default) while a
  worker relays them and the analytics consumer process folds them; from the outbox row's time
  to the fold's commit, p50 and p99;
- charts: the console's analytics page for 365 days over a year of data (``--chart-orders-per-day``).
"""

import os
import time
import uuid
from datetime import UTC, datetime, timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import connection, transaction
from django.test import Client

from analytics.consumer import rebuild
from analytics.models import CancellationDaily, DailySales, FoldedEvent, Fulfilment, Generation, ProductDaily
from analytics.services import analytics_clear
from common.redis import get_redis
from devtools.benchmarking import (
    bench_workers,
    collect_static_for_run,
    in_bench_child,
    percentile,
    rerun_isolated,
    stop_on_signals,
)
from devtools.launcher import LOCAL_EVENT_STREAM_URL
from devtools.processes import ROOT, AnalyticsConsumerProcess, wait_for
from inventory.contracts import StockReservedV1
from orders.contracts import OrderConfirmedV1, OrderPlacedV1
from outbox.events import occurred, publish_event
from outbox.models import OutboxMessage
from outbox.nudge import NUDGE_KEY
from outbox.relay import relay_drain
from outbox.stream import STREAM_DESTINATION, event_stream
from payments.contracts import PaymentCapturedV1
from shipping.contracts import ShipmentCreatedV1

STREAM_NAME = "backoffice.events.bench"


def order_events(order_id: int, moment: datetime) -> list:
    """The five events of a confirmed order."""
    saga_id = str(uuid.uuid4())
    lines = [{"sku": "SKU-A", "name": "Grinder", "quantity": 1, "unit_price_amount": 4500}]
    return [
        OrderPlacedV1(order_id, saga_id, 4500, "EUR", lines, occurred(moment)),
        PaymentCapturedV1(order_id, saga_id, order_id, 4500, "EUR", f"ch_{order_id}", occurred(moment)),
        StockReservedV1(order_id, saga_id, order_id, [{"sku": "SKU-A", "quantity": 1}], occurred(moment)),
        ShipmentCreatedV1(order_id, saga_id, order_id, f"TRK{order_id}", "DE", occurred(moment)),
        OrderConfirmedV1(order_id, saga_id, occurred(moment + timedelta(seconds=1))),
    ]


class Command(BaseCommand):
    help = "Measure stream publishing, rebuild and commit-to-projection lag of the analytics read model (own database)."

    def add_arguments(self, parser):
        parser.add_argument("--events", type=int, default=50_000)
        parser.add_argument("--rate", type=float, default=500.0, help="events/s for the lag measurement")
        parser.add_argument("--lag-seconds", type=float, default=10.0)
        parser.add_argument("--chart-orders-per-day", type=int, default=1000)

    def handle(self, *args, events: int, rate: float, lag_seconds: float, chart_orders_per_day: int, **options):
        if not in_bench_child():
            argv = [
                "bench_events",
                f"--events={events}",
                f"--rate={rate}",
                f"--lag-seconds={lag_seconds}",
                f"--chart-orders-per-day={chart_orders_per_day}",
            ]
            extra = {
                "EVENT_STREAM_URL": os.environ.get("EVENT_STREAM_URL") or LOCAL_EVENT_STREAM_URL,
                "EVENT_STREAM_NAME": STREAM_NAME,
            }
            raise SystemExit(rerun_isolated(argv, name="bench_events", redis_db=12, extra_env=extra))
        stop_on_signals()
        stream = event_stream()
        stream.delete()
        stream.declare()
        events -= events % 5  # whole orders of five events
        stream_rate = self._publish(events)
        rebuild_rate = self._rebuild(events)
        p50, p99, sample = self._lag(rate=rate, seconds=lag_seconds)
        charts_ms = self._charts(orders_per_day=chart_orders_per_day)
        stream.delete()
        self.stdout.write(f"events={events} lag_sample={sample} at {rate:.0f} events/s lag_p50_ms={p50:.1f}")
        self.stdout.write(
            f"stream_events_per_s={stream_rate:.0f} rebuild_events_per_s={rebuild_rate:.0f} lag_p99_ms={p99:.1f}"
        )
        self.stdout.write(f"charts_year_ms={charts_ms:.1f} (the analytics page, 365 days)")

    def _publish(self, count: int) -> float:
        """Committed events, published by one relay with the nudges held off."""
        get_redis().set(NUDGE_KEY, "1", px=600_000)
        start = datetime.now(UTC)
        orders = count // 5
        for first in range(1, orders + 1, 100):
            with transaction.atomic():
                for order_id in range(first, min(orders, first + 99) + 1):
                    for event in order_events(order_id, start):
                        publish_event(event, aggregate="order", aggregate_id=order_id)
        count = orders * 5
        written = OutboxMessage.objects.filter(destination=STREAM_DESTINATION, published_at__isnull=True).count()
        began = time.perf_counter()
        sent = relay_drain(max_seconds=600)
        seconds = time.perf_counter() - began
        assert sent == written == count, (sent, written, count)
        self.stderr.write(f"published {sent} events in {seconds:.2f} s")
        return sent / seconds

    def _rebuild(self, count: int) -> float:
        analytics_clear()
        result = rebuild(batch_size=2000)
        assert result.folded == count, (result.folded, count)
        self.stderr.write(f"rebuilt from {result.folded} events in {result.seconds:.2f} s")
        return result.folded / result.seconds

    def _lag(self, *, rate: float, seconds: float) -> tuple[float, float, int]:
        """Orders' events at ``rate`` events/s, one order (five events) per transaction, relayed
        by a worker (nudged after each commit, as in production), folded by the consumer process."""
        get_redis().delete(NUDGE_KEY)
        log_dir = ROOT / "artifacts"
        log_dir.mkdir(exist_ok=True)
        consumer = AnalyticsConsumerProcess({**os.environ}, log_dir / "bench-analytics.log", batch_size=1000)
        worker = bench_workers(concurrency=2)
        consumer.start()
        try:
            generation = Generation.objects.get(status=Generation.Status.ACTIVE)
            wait_for(
                lambda: Generation.objects.filter(pk=generation.pk, tail_seen_at__isnull=False).exists(), timeout=60
            )
            mark = (
                FoldedEvent.objects.filter(generation=generation).order_by("-id").values_list("id", flat=True).first()
            )
            interval = 5 / rate
            order_id = 10_000_000
            began = time.perf_counter()
            sent = 0
            while time.perf_counter() - began < seconds:
                order_id += 1
                with transaction.atomic():
                    for event in order_events(order_id, datetime.now(UTC)):
                        publish_event(event, aggregate="order", aggregate_id=order_id)
                sent += 5
                pause = began + sent / 5 * interval - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
            wait_for(
                lambda: FoldedEvent.objects.filter(generation=generation, id__gt=mark or 0).count() >= sent,
                timeout=120,
                message="the analytics consumer did not fold every event",
            )
        finally:
            consumer.stop()
            worker.stop()
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT extract(epoch FROM folded_at - written_at) * 1000 FROM analytics_foldedevent"
                " WHERE generation_id = %s AND id > %s",
                [generation.pk, mark or 0],
            )
            lags = [float(row[0]) for row in cursor.fetchall()]
        return percentile(lags, 0.5), percentile(lags, 0.99), len(lags)

    def _charts(self, *, orders_per_day: int) -> float:
        """A year of figures in the active generation, then the analytics page over 365 days."""
        analytics_clear()
        generation = Generation.objects.create(status=Generation.Status.ACTIVE, stream=STREAM_NAME)
        today = datetime.now(UTC).date()
        days = [today - timedelta(days=offset) for offset in range(365)]
        DailySales.objects.bulk_create(
            DailySales(
                generation=generation,
                day=day,
                currency="EUR",
                orders_placed=orders_per_day,
                orders_confirmed=orders_per_day * 9 // 10,
                orders_cancelled=orders_per_day // 10,
                captured_amount=orders_per_day * 4500,
                refunded_amount=orders_per_day // 20 * 4500,
                refunds=orders_per_day // 20,
            )
            for day in days
        )
        ProductDaily.objects.bulk_create(
            ProductDaily(generation=generation, day=day, sku=f"SKU-{n}", currency="EUR", units=10, revenue_amount=45000)
            for day in days
            for n in range(20)
        )
        CancellationDaily.objects.bulk_create(
            CancellationDaily(generation=generation, day=day, reason=reason, orders=orders_per_day // 30)
            for day in days
            for reason in ("payment declined: card declined", "out of stock", "cancelled by the customer")
        )
        order_id = 0
        batch = []
        for day in days:
            for n in range(orders_per_day * 9 // 10):
                order_id += 1
                batch.append(
                    Fulfilment(generation=generation, order_id=order_id, day=day, seconds=0.05 + (n % 97) / 50)
                )
            if len(batch) >= 20_000:
                Fulfilment.objects.bulk_create(batch)
                batch = []
        Fulfilment.objects.bulk_create(batch)
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE analytics_fulfilment; ANALYZE analytics_dailysales")
        user = get_user_model().objects.create_superuser("bench-analytics", "bench@example.com", "x")
        client = Client(HTTP_HOST="localhost")
        client.force_login(user)
        timings = []
        collect_static_for_run()
        for _ in range(7):
            began = time.perf_counter()
            response = client.get("/admin/analytics/?days=365")
            timings.append((time.perf_counter() - began) * 1000)
            assert response.status_code == 200, response.status_code
            assert b"Net revenue per day" in response.content
        self.stderr.write(f"analytics page over {order_id} fulfilments: {[round(t) for t in timings]} ms")
        return percentile(timings, 0.5)
