"""The analytics figures computed by SQL straight from the source contexts' tables: what the
read model, folded from the stream alone, must equal."""

from collections import defaultdict
from typing import Any

from django.db import connection

SALES_SQL = """
    WITH days AS (
        SELECT (created_at AT TIME ZONE 'UTC')::date AS day, currency, 1 AS placed, 0 AS confirmed, 0 AS cancelled,
               0 AS captured, 0 AS refunded, 0 AS refunds
          FROM orders_order
        UNION ALL
        SELECT (updated_at AT TIME ZONE 'UTC')::date, currency, 0, (status = 'confirmed')::int,
               (status = 'cancelled')::int, 0, 0, 0
          FROM orders_order WHERE status IN ('confirmed', 'cancelled')
        UNION ALL
        SELECT (created_at AT TIME ZONE 'UTC')::date, currency, 0, 0, 0,
               CASE WHEN kind = 'charge' THEN amount ELSE 0 END,
               CASE WHEN kind = 'refund' THEN amount ELSE 0 END, (kind = 'refund')::int
          FROM payments_ledgerentry
    )
    SELECT day, currency, sum(placed), sum(confirmed), sum(cancelled), sum(captured), sum(refunded), sum(refunds)
      FROM days GROUP BY day, currency ORDER BY day, currency
"""

PRODUCTS_SQL = """
    SELECT (e.created_at AT TIME ZONE 'UTC')::date AS day, l.sku, o.currency,
           sum(CASE WHEN e.kind = 'charge' THEN l.quantity ELSE -l.quantity END),
           sum(CASE WHEN e.kind = 'charge' THEN 1 ELSE -1 END * l.quantity * l.unit_price_amount)
      FROM payments_ledgerentry e
      JOIN orders_order o ON o.id = e.order_id
      JOIN orders_orderline l ON l.order_id = o.id
     GROUP BY 1, 2, 3 ORDER BY 1, 2
"""

REASONS_SQL = """
    SELECT cancel_reason, count(*) FROM orders_order WHERE status = 'cancelled'
     GROUP BY cancel_reason ORDER BY count(*) DESC, cancel_reason
"""

FULFILMENT_SQL = """
    SELECT (updated_at AT TIME ZONE 'UTC')::date, count(*),
           percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM updated_at - created_at)),
           percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM updated_at - created_at))
      FROM orders_order WHERE status = 'confirmed' GROUP BY 1 ORDER BY 1
"""

COMPENSATION_SQL = """
    SELECT count(*) FILTER (WHERE state = 'compensated'), count(*) FILTER (WHERE state IN ('completed', 'compensated'))
      FROM sagas_sagainstance
"""


def _rows(sql: str) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchall()


def source_figures() -> dict[str, Any]:
    sales = []
    for day, currency, placed, confirmed, cancelled, captured, refunded, refunds in _rows(SALES_SQL):
        finished = confirmed + cancelled
        sales.append(
            {
                "day": day,
                "currency": currency,
                "orders_placed": placed,
                "orders_confirmed": confirmed,
                "orders_cancelled": cancelled,
                "captured_amount": captured,
                "refunded_amount": refunded,
                "refunds": refunds,
                "net_amount": captured - refunded,
                "compensation_rate": cancelled / finished if finished else None,
            }
        )
    products = [
        {"day": day, "sku": sku, "currency": currency, "units": units, "revenue_amount": revenue}
        for day, sku, currency, units, revenue in _rows(PRODUCTS_SQL)
    ]
    fulfilment = [
        {"day": day, "orders": n, "p50": float(p50), "p95": float(p95)} for day, n, p50, p95 in _rows(FULFILMENT_SQL)
    ]
    compensated, finished = _rows(COMPENSATION_SQL)[0]
    return {
        "sales": sales,
        "products": products,
        "cancellations": dict(_rows(REASONS_SQL)),
        "fulfilment": fulfilment,
        "compensation_rate": compensated / finished if finished else None,
    }


def comparable(figures: dict[str, Any]) -> dict[str, Any]:
    """Figures with floats rounded (seconds to the microsecond), for an exact comparison."""
    out = dict(figures)
    out["fulfilment"] = [
        {**row, "p50": round(row["p50"], 6), "p95": round(row["p95"], 6)} for row in figures["fulfilment"]
    ]
    rate = figures["compensation_rate"]
    out["compensation_rate"] = None if rate is None else round(rate, 9)
    out["sales"] = [
        {**row, "compensation_rate": None if row["compensation_rate"] is None else round(row["compensation_rate"], 9)}
        for row in figures["sales"]
    ]
    out["cancellations"] = dict(sorted(figures["cancellations"].items()))
    products = defaultdict(int)
    for row in figures["products"]:
        products[(row["day"], row["sku"], row["currency"], "units")] += row["units"]
        products[(row["day"], row["sku"], row["currency"], "revenue")] += row["revenue_amount"]
    out["products"] = dict(sorted(products.items()))
    return out
