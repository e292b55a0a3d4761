"""The statement every order placement runs, written once as SQL: the order and its lines in
one round trip, prepared once, instead of two ORM inserts compiled anew for every order.

It writes exactly what ``Order.objects.create`` and ``OrderLine.objects.bulk_create`` would;
the models stay the description of the tables.
"""

import uuid
from dataclasses import dataclass
from typing import Any

from django.db import connection
from psycopg.types.json import Jsonb

from orders.models import Order, OrderLine

_ORDER_NAMES = [field.attname for field in Order._meta.concrete_fields]
_LINE_NAMES = [field.attname for field in OrderLine._meta.concrete_fields]

# The times are the database's, as the columns' defaults give them. The lines' ids come back
# with their skus (one line per sku and order), so each is matched to its own line.
_INSERT_SQL = """
    WITH placed AS (
        INSERT INTO orders_order (client_id, customer_email, customer_name, shipping_address, total_amount,
                                  currency, status, cancel_reason, saga_id)
        VALUES (%s, %s, %s, %s, %s, %s, 'pending', '', %s)
        RETURNING id, created_at, updated_at
    ), placed_lines AS (
        INSERT INTO orders_orderline (order_id, sku, name, quantity, unit_price_amount, currency)
        SELECT placed.id, line.sku, line.name, line.quantity, line.unit_price_amount, %s
          FROM placed, unnest(%s::varchar[], %s::varchar[], %s::integer[], %s::integer[])
                       AS line(sku, name, quantity, unit_price_amount)
        RETURNING id, sku
    )
    SELECT placed.id, placed.created_at, placed.updated_at,
           (SELECT array_agg(id ORDER BY id) FROM placed_lines),
           (SELECT array_agg(sku ORDER BY id) FROM placed_lines)
      FROM placed
"""


@dataclass(frozen=True)
class NewLine:
    sku: str
    name: str
    quantity: int
    unit_price_amount: int


def order_insert(
    *,
    client_id: int | None,
    customer_email: str,
    customer_name: str,
    shipping_address: dict[str, Any],
    total_amount: int,
    currency: str,
    saga_id: uuid.UUID,
    lines: list[NewLine],
) -> Order:
    """Insert a pending order with its lines (in the caller's transaction). The order comes
    back with its lines known, in their order: ``order.lines.all()`` reads nothing."""
    with connection.cursor() as cursor:
        cursor.execute(
            _INSERT_SQL,
            [
                client_id,
                customer_email,
                customer_name,
                Jsonb(shipping_address),
                total_amount,
                currency,
                saga_id,
                currency,
                [line.sku for line in lines],
                [line.name for line in lines],
                [line.quantity for line in lines],
                [line.unit_price_amount for line in lines],
            ],
        )
        order_id, created_at, updated_at, line_ids, line_skus = cursor.fetchone()
    order = Order.from_db(
        connection.alias,
        _ORDER_NAMES,
        [
            order_id,
            client_id,
            customer_email,
            customer_name,
            shipping_address,
            total_amount,
            currency,
            Order.Status.PENDING,
            "",
            saga_id,
            created_at,
            updated_at,
        ],
    )
    id_of = dict(zip(line_skus, line_ids, strict=True))
    written = [
        OrderLine.from_db(
            connection.alias,
            _LINE_NAMES,
            [id_of[line.sku], order_id, line.sku, line.name, line.quantity, line.unit_price_amount, currency],
        )
        for line in lines
    ]
    # The order's lines, as a prefetch would have read them (by id, the model's ordering).
    order._prefetched_objects_cache = {"lines": sorted(written, key=lambda line: line.pk)}
    return order
