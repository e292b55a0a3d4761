"""Reads of the analytics read model: always the active generation's figures, and the live
consumer's lag. The console's charts and /metrics read these."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from django.db import connection
from django.db.models import Sum
from django.utils import timezone

from analytics.models import CancellationDaily, DailySales, Fulfilment, Generation, ProductDaily


@dataclass(frozen=True)
class ConsumerLag:
    generation: int
    next_offset: int
    tail_offset: int | None
    events: int
    seconds: float
    seen_seconds_ago: float | None  # since the consumer last looked at the tail (None: never)


def active_generation() -> Generation | None:
    return Generation.objects.filter(status=Generation.Status.ACTIVE).first()


def consumer_lag() -> ConsumerLag | None:
    """How far the live consumer is behind the stream: events between its position and the tail
    it last saw, and, when behind, the age of the last event it folded. None before it first ran."""
    generation = active_generation()
    if generation is None:
        return None
    now = timezone.now()
    tail = generation.tail_offset
    events = 0 if tail is None else max(0, tail + 1 - generation.next_offset)
    seconds = (now - generation.last_event_at).total_seconds() if events and generation.last_event_at else 0.0
    seen = (now - generation.tail_seen_at).total_seconds() if generation.tail_seen_at else None
    return ConsumerLag(generation.pk, generation.next_offset, tail, events, max(seconds, 0.0), seen)


def _active(queryset):
    return queryset.filter(generation__status=Generation.Status.ACTIVE)


def sales_per_day(*, since: date | None = None) -> list[dict[str, Any]]:
    """Per day and currency: orders placed, confirmed, cancelled; captured, refunded and net
    revenue in minor units; the compensation rate of the sagas that finished that day."""
    rows = _active(DailySales.objects.all())
    if since is not None:
        rows = rows.filter(day__gte=since)
    result = []
    for row in rows.order_by("day", "currency").values(
        "day",
        "currency",
        "orders_placed",
        "orders_confirmed",
        "orders_cancelled",
        "captured_amount",
        "refunded_amount",
        "refunds",
    ):
        finished = row["orders_confirmed"] + row["orders_cancelled"]
        row["net_amount"] = row["captured_amount"] - row["refunded_amount"]
        row["compensation_rate"] = row["orders_cancelled"] / finished if finished else None
        result.append(row)
    return result


def products_per_day(*, since: date | None = None) -> list[dict[str, Any]]:
    rows = _active(ProductDaily.objects.all())
    if since is not None:
        rows = rows.filter(day__gte=since)
    return list(rows.order_by("day", "sku").values("day", "sku", "currency", "units", "revenue_amount"))


def cancellations_by_reason(*, since: date | None = None) -> dict[str, int]:
    rows = _active(CancellationDaily.objects.all())
    if since is not None:
        rows = rows.filter(day__gte=since)
    totals = rows.values("reason").annotate(orders=Sum("orders")).order_by("-orders", "reason")
    return {row["reason"]: row["orders"] for row in totals}


def fulfilment_per_day(*, since: date | None = None) -> list[dict[str, Any]]:
    """Per day of confirmation: orders confirmed and the p50 and p95 of their time from
    placement to confirmation, in seconds (PostgreSQL's percentile_cont)."""
    generation = active_generation()
    if generation is None:
        return []
    table = connection.ops.quote_name(Fulfilment._meta.db_table)
    sql = f"""
        SELECT day, count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds),
               percentile_cont(0.95) WITHIN GROUP (ORDER BY seconds)
          FROM {table} WHERE generation_id = %s AND day >= %s GROUP BY day ORDER BY day
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [generation.pk, since or date.min])
        return [{"day": day, "orders": n, "p50": p50, "p95": p95} for day, n, p50, p95 in cursor.fetchall()]


def compensation_rate() -> float | None:
    """Of the order sagas that finished, the share that was compensated (cancelled)."""
    totals = _active(DailySales.objects.all()).aggregate(
        confirmed=Sum("orders_confirmed"), cancelled=Sum("orders_cancelled")
    )
    finished = (totals["confirmed"] or 0) + (totals["cancelled"] or 0)
    return (totals["cancelled"] or 0) / finished if finished else None


def figures(*, since: date | None = None) -> dict[str, Any]:
    """Every figure of the read model, as plain values (what the charts draw and the tests compare)."""
    return {
        "sales": sales_per_day(since=since),
        "products": products_per_day(since=since),
        "cancellations": cancellations_by_reason(since=since),
        "fulfilment": fulfilment_per_day(since=since),
        "compensation_rate": compensation_rate(),
    }


def chart_since(days: int) -> date:
    return timezone.now().date() - timedelta(days=days - 1)
