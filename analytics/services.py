"""Writes of the analytics context: folding a batch of stream records into a generation, and
starting and switching generations.

A batch is folded in one transaction that also moves the generation's stream position past it:
a consumer killed before the commit folds the same records again from the old position, one
killed after it starts after them, so no event is counted twice or skipped. A copy of an event
that is already folded (the relay publishes at least once) is recognised by its id and ignored.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from analytics.models import CancellationDaily, DailySales, FoldedEvent, Fulfilment, Generation, OrderFact, ProductDaily
from common.faults import fault_rate
from common.rows import insert_rows_statement
from inventory.contracts import StockReleasedV1, StockReservedV1
from orders.contracts import OrderCancelledV1, OrderConfirmedV1, OrderPlacedV1
from outbox.events import parse_event
from outbox.exceptions import PoisonMessage
from outbox.signing import is_authentic_text
from outbox.stream import StreamRecord
from payments.contracts import PaymentCapturedV1, PaymentRefundedV1
from shipping.contracts import ShipmentCancelledV1, ShipmentCreatedV1

logger = logging.getLogger(__name__)

# The events that change no figure yet: folded (their position and id kept) and otherwise left.
_NO_FIGURES = (StockReservedV1, StockReleasedV1, ShipmentCreatedV1, ShipmentCancelledV1)


class GenerationRetired(Exception):
    """The generation being folded is no longer the one to fold (a rebuild replaced it)."""


@dataclass
class Folded:
    folded: int = 0
    duplicates: int = 0
    rejected: int = 0
    skipped: int = 0  # before the generation's position: folded by an earlier run


def _adding(model: type, key: tuple[str, ...], counters: tuple[str, ...]):
    """``INSERT ... ON CONFLICT (key) DO UPDATE SET counter = counter + EXCLUDED.counter``, for
    a batch's figures added to the rows they already have."""
    statement = insert_rows_statement(model, returning=())
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    columns = {f.attname: f.column for f in model._meta.concrete_fields}
    sql = "{} ON CONFLICT ({}) DO UPDATE SET {}".format(
        statement.sql,
        ", ".join(quote(columns[name]) for name in key),
        ", ".join(
            f"{quote(columns[c])} = {table}.{quote(columns[c])} + EXCLUDED.{quote(columns[c])}" for c in counters
        ),
    )
    return sql, statement


_SALES_COUNTERS = (
    "orders_placed",
    "orders_confirmed",
    "orders_cancelled",
    "captured_amount",
    "refunded_amount",
    "refunds",
)
_ADD_SALES = _adding(DailySales, ("generation_id", "day", "currency"), _SALES_COUNTERS)
_ADD_PRODUCTS = _adding(ProductDaily, ("generation_id", "day", "sku", "currency"), ("units", "revenue_amount"))
_ADD_REASONS = _adding(CancellationDaily, ("generation_id", "day", "reason"), ("orders",))
_FOLDED = insert_rows_statement(FoldedEvent, returning=())
_FOLDED_SQL = _FOLDED.sql + " ON CONFLICT DO NOTHING RETURNING event_id"
_FULFILMENT = insert_rows_statement(Fulfilment, returning=())
_FULFILMENT_SQL = _FULFILMENT.sql + " ON CONFLICT DO NOTHING"


@dataclass
class _Figures:
    sales: dict[tuple[date, str], dict[str, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    products: dict[tuple[date, str, str], list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    reasons: dict[tuple[date, str], int] = field(default_factory=lambda: defaultdict(int))
    fulfilments: dict[int, tuple[date, float]] = field(default_factory=dict)


def _day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        moment = None
    if moment is None or moment.tzinfo is None:
        raise PoisonMessage(f"{text!r} is not an ISO 8601 time with its offset")
    return moment


def fold(generation_id: int, records: Iterable[StreamRecord]) -> Folded:
    """Fold ``records`` (in stream order) into the generation and move its position past them,
    in one transaction. Raises GenerationRetired when the generation is retired."""
    result = Folded()
    with transaction.atomic():
        generation = Generation.objects.select_for_update().get(pk=generation_id)
        if generation.status == Generation.Status.RETIRED:
            raise GenerationRetired(f"generation {generation_id} was replaced")
        fresh = [record for record in records if record.offset >= generation.next_offset]
        if not fresh:
            return result
        events: list[tuple[StreamRecord, Any, Any]] = []
        for record in fresh:
            try:
                if not is_authentic_text(record.body):
                    raise PoisonMessage("not authentic: no key of ours signed it")
                message, event = parse_event(record.envelope())
                events.append((record, message, event))
            except (ValueError, PoisonMessage) as exc:
                result.rejected += 1
                logger.warning("stream event rejected", extra={"offset": record.offset, "error": str(exc)})
        new_ids = _record_folded(generation.pk, events)
        seen: set[str] = set()
        first_copies = []
        for _record, message, event in events:
            if message.message_id in new_ids and message.message_id not in seen:
                seen.add(message.message_id)
                first_copies.append((message, event))
        result.duplicates = len(events) - len(first_copies)
        result.folded = len(first_copies)
        _apply(generation.pk, first_copies)
        generation.next_offset = fresh[-1].offset + 1
        generation.events_folded += result.folded
        generation.duplicates_ignored += result.duplicates
        generation.events_rejected += result.rejected
        if events:
            generation.last_event_at = max(_moment(message.created_at) for _, message, _ in events)
        generation.updated_at = timezone.now()
        pause = fault_rate("analytics_fold_pause_ms")
        if pause:  # tests kill the consumer here, with the batch folded but not committed
            time.sleep(pause / 1000)
        generation.save(
            update_fields=[
                "next_offset",
                "events_folded",
                "duplicates_ignored",
                "events_rejected",
                "last_event_at",
                "updated_at",
            ]
        )
    return result


def _record_folded(generation_id: int, events: list[tuple[StreamRecord, Any, Any]]) -> set[str]:
    """Insert the events' ids for the generation; returns those not folded before."""
    if not events:
        return set()
    values = {
        "generation_id": [generation_id] * len(events),
        "event_id": [message.message_id for _, message, _ in events],
        "offset": [record.offset for record, _, _ in events],
        "type": [message.type for _, message, _ in events],
        "written_at": [_moment(message.created_at) for _, message, _ in events],
    }
    with connection.cursor() as cursor:
        cursor.execute(_FOLDED_SQL, _FOLDED.params(values))
        return {str(row[0]) for row in cursor.fetchall()}


def _apply(generation_id: int, events: list[tuple[Any, Any]]) -> None:
    if not events:
        return
    order_ids = {event.order_id for _, event in events}
    facts = {
        fact.order_id: fact for fact in OrderFact.objects.filter(generation_id=generation_id, order_id__in=order_ids)
    }
    touched: set[int] = set()
    figures = _Figures()
    for _, event in events:
        if isinstance(event, _NO_FIGURES):
            continue
        fact = facts.get(event.order_id)
        if fact is None:
            fact = facts[event.order_id] = OrderFact(generation_id=generation_id, order_id=event.order_id)
        touched.add(event.order_id)
        moment = _moment(event.occurred_at)
        day = _day(moment)
        if isinstance(event, OrderPlacedV1):
            fact.saga_id, fact.placed_at = event.saga_id, moment
            fact.total_amount, fact.currency, fact.lines = event.total_amount, event.currency, event.lines
            figures.sales[(day, event.currency)]["orders_placed"] += 1
        elif isinstance(event, PaymentCapturedV1 | PaymentRefundedV1):
            refund = isinstance(event, PaymentRefundedV1)
            sales = figures.sales[(day, event.currency)]
            if refund:
                sales["refunded_amount"] += event.amount
                sales["refunds"] += 1
                fact.refunded_amount += event.amount
            else:
                sales["captured_amount"] += event.amount
                fact.captured_amount += event.amount
            sign = -1 if refund else 1
            for line in fact.lines:
                product = figures.products[(day, line["sku"], fact.currency or event.currency)]
                product[0] += sign * line["quantity"]
                product[1] += sign * line["quantity"] * line["unit_price_amount"]
        elif isinstance(event, OrderConfirmedV1):
            fact.confirmed_at = moment
            figures.sales[(day, fact.currency or "XXX")]["orders_confirmed"] += 1
            if fact.placed_at is not None:
                figures.fulfilments[event.order_id] = (day, (moment - fact.placed_at).total_seconds())
        elif isinstance(event, OrderCancelledV1):
            fact.cancelled_at, fact.cancel_reason = moment, event.reason
            figures.sales[(day, fact.currency or "XXX")]["orders_cancelled"] += 1
            figures.reasons[(day, event.reason)] += 1
    _write(generation_id, [facts[order_id] for order_id in sorted(touched)], figures)


def _write(generation_id: int, facts: list[OrderFact], figures: _Figures) -> None:
    OrderFact.objects.bulk_create(
        facts,
        update_conflicts=True,
        unique_fields=["generation", "order_id"],
        update_fields=[
            "saga_id",
            "placed_at",
            "total_amount",
            "currency",
            "lines",
            "captured_amount",
            "refunded_amount",
            "confirmed_at",
            "cancelled_at",
            "cancel_reason",
        ],
    )
    with connection.cursor() as cursor:
        if figures.sales:
            keys = sorted(figures.sales)
            sql, statement = _ADD_SALES
            values: dict[str, list[Any]] = {
                "generation_id": [generation_id] * len(keys),
                "day": [day for day, _ in keys],
                "currency": [currency for _, currency in keys],
            }
            for counter in _SALES_COUNTERS:
                values[counter] = [figures.sales[key][counter] for key in keys]
            cursor.execute(sql, statement.params(values))
        if figures.products:
            keys = sorted(figures.products)
            sql, statement = _ADD_PRODUCTS
            cursor.execute(
                sql,
                statement.params(
                    {
                        "generation_id": [generation_id] * len(keys),
                        "day": [key[0] for key in keys],
                        "sku": [key[1] for key in keys],
                        "currency": [key[2] for key in keys],
                        "units": [figures.products[key][0] for key in keys],
                        "revenue_amount": [figures.products[key][1] for key in keys],
                    }
                ),
            )
        if figures.reasons:
            keys = sorted(figures.reasons)
            sql, statement = _ADD_REASONS
            cursor.execute(
                sql,
                statement.params(
                    {
                        "generation_id": [generation_id] * len(keys),
                        "day": [key[0] for key in keys],
                        "reason": [key[1] for key in keys],
                        "orders": [figures.reasons[key] for key in keys],
                    }
                ),
            )
        if figures.fulfilments:
            order_ids = sorted(figures.fulfilments)
            cursor.execute(
                _FULFILMENT_SQL,
                _FULFILMENT.params(
                    {
                        "generation_id": [generation_id] * len(order_ids),
                        "order_id": order_ids,
                        "day": [figures.fulfilments[order_id][0] for order_id in order_ids],
                        "seconds": [figures.fulfilments[order_id][1] for order_id in order_ids],
                    }
                ),
            )


# -- generations --------------------------------------------------------------------------------


def generation_active_or_start(*, stream: str) -> Generation:
    """The active generation; the first one (from the stream's first event) if there is none."""
    active = Generation.objects.filter(status=Generation.Status.ACTIVE).first()
    if active is not None:
        return active
    try:
        with transaction.atomic():
            return Generation.objects.create(
                status=Generation.Status.ACTIVE, stream=stream, activated_at=timezone.now()
            )
    except IntegrityError:  # another consumer started it first (one active generation at most)
        return Generation.objects.get(status=Generation.Status.ACTIVE)


def generation_start(*, stream: str) -> Generation:
    """A new generation to build from the stream's first retained event, beside the active one."""
    return Generation.objects.create(status=Generation.Status.BUILDING, stream=stream)


def generation_activate(generation_id: int) -> Generation:
    """Make a built generation the active one and retire the one it replaces, in one
    transaction: readers see the old figures or the new ones, never a mix."""
    with transaction.atomic():
        generations = {
            g.pk: g
            for g in Generation.objects.select_for_update()
            .filter(status__in=[Generation.Status.ACTIVE, Generation.Status.BUILDING])
            .order_by("pk")
        }
        generation = generations.get(generation_id)
        if generation is None or generation.status != Generation.Status.BUILDING:
            raise ValueError(f"generation {generation_id} is not being built")
        now = timezone.now()
        retired = Generation.Status.RETIRED
        Generation.objects.filter(status=Generation.Status.ACTIVE).update(status=retired, updated_at=now)
        generation.status, generation.activated_at, generation.updated_at = Generation.Status.ACTIVE, now, now
        generation.save(update_fields=["status", "activated_at", "updated_at"])
    return generation


def generation_record_tail(generation_id: int, tail_offset: int | None) -> None:
    Generation.objects.filter(pk=generation_id).update(tail_offset=tail_offset, tail_seen_at=timezone.now())


def generations_purge_retired() -> int:
    """Delete the rows of retired generations (their figures were replaced)."""
    deleted = 0
    for generation in Generation.objects.filter(status=Generation.Status.RETIRED):
        with transaction.atomic():
            for model in (FoldedEvent, Fulfilment, ProductDaily, CancellationDaily, DailySales, OrderFact):
                deleted += model.objects.filter(generation=generation).delete()[0]
            generation.delete()
    return deleted


def analytics_clear() -> None:
    """Drop the whole read model (every generation): ``analytics_rebuild`` makes it again."""
    with transaction.atomic(), connection.cursor() as cursor:
        tables = [
            m._meta.db_table
            for m in (FoldedEvent, Fulfilment, ProductDaily, CancellationDaily, DailySales, OrderFact, Generation)
        ]
        cursor.execute("TRUNCATE " + ", ".join(connection.ops.quote_name(t) for t in tables))
