"""The statement every order placement runs, generated from the models (common.rows): the
order and its lines in one round trip, prepared once, instead of two ORM inserts compiled anew
for every order.

It writes exactly what ``Order.objects.create`` and ``OrderLine.objects.bulk_create`` would (the
parity tests compare them field by field); the models stay the description of the tables.
"""

import uuid
from dataclasses import dataclass
from typing import Any

from django.db import connection

from common.rows import column_names, insert_rows_statement, insert_statement, instance_from_row, select_columns
from orders.models import Order, OrderLine

_ORDER = insert_statement(Order, returning=[field.attname for field in Order._meta.concrete_fields])
# The lines' ids come back with their skus (one line per sku and order), so each is matched to its
# own line.
_LINES = insert_rows_statement(OrderLine, expressions={"order_id": "(SELECT id FROM placed)"}, returning=("id", "sku"))
_INSERT_SQL = f"""
    WITH placed AS ({_ORDER.sql}), placed_lines AS ({_LINES.sql})
    SELECT {select_columns(Order, alias="placed")},
           (SELECT array_agg(id ORDER BY id) FROM placed_lines) AS line_ids,
           (SELECT array_agg(sku ORDER BY id) FROM placed_lines) AS line_skus
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
    order_values = {
        "client_id": client_id,
        "customer_email": customer_email,
        "customer_name": customer_name,
        "shipping_address": shipping_address,
        "total_amount": total_amount,
        "currency": currency,
        "saga_id": saga_id,
    }
    line_values = {
        "sku": [line.sku for line in lines],
        "name": [line.name for line in lines],
        "quantity": [line.quantity for line in lines],
        "unit_price_amount": [line.unit_price_amount for line in lines],
        "currency": [currency for _ in lines],
    }
    with connection.cursor() as cursor:
        cursor.execute(_INSERT_SQL, [*_ORDER.params(order_values), *_LINES.params(line_values)])
        names, row = column_names(cursor), cursor.fetchone()
    order = instance_from_row(Order, names, row)
    by_name = dict(zip(names, row, strict=True))
    id_of = dict(zip(by_name["line_skus"], by_name["line_ids"], strict=True))
    written = [
        OrderLine(
            id=id_of[line.sku],
            order_id=order.pk,
            sku=line.sku,
            name=line.name,
            quantity=line.quantity,
            unit_price_amount=line.unit_price_amount,
            currency=currency,
        )
        for line in lines
    ]
    for line in written:
        line._state.adding = False
        line._state.db = connection.alias
    # The order's lines, as a prefetch would have read them (by id, the model's ordering).
    order._prefetched_objects_cache = {"lines": sorted(written, key=lambda line: line.pk)}
    return order
