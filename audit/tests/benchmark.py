"""How long the auditor takes on a large, consistent database. Not a test: run it by hand
against a throwaway database whose name ends in ``_bench`` (it refuses any other):

    createdb -h 127.0.0.1 -U postgres backoffice_audit_bench
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/backoffice_audit_bench \\
        .venv/bin/python -m audit.tests.benchmark --orders 20000 --changed 100

It migrates, seeds the orders with set-based inserts (as the saga would have left them: 85 %
confirmed, 5 % declined, 5 % out of stock then refunded, 5 % address rejected then released
and refunded; the carrier's book and the notices to match), times full sweeps, then adds
``--changed`` orders and times the incremental run that follows. Every run must come out
clean, or the seed (or the auditor) is wrong.
"""

import argparse
import os
import statistics
import time

PRODUCTS = 50

_SEED = """
CREATE TEMP TABLE seed ON COMMIT DROP AS
SELECT {offset} + i AS oid, gen_random_uuid() AS saga_id,
       CASE i % 20 WHEN 0 THEN 'declined' WHEN 1 THEN 'oos' WHEN 2 THEN 'rejected' ELSE 'confirmed' END AS outcome
  FROM generate_series(1, {count}) AS i;

CREATE TEMP TABLE seed_line ON COMMIT DROP AS
SELECT s.oid, s.saga_id, s.outcome, p.id AS product_id, p.sku, p.name, p.price_amount,
       1 + (s.oid + k) % 2 AS quantity
  FROM seed s
 CROSS JOIN generate_series(0, 2) AS k
  JOIN inventory_product p ON p.sku = 'BENCH-' || lpad((((s.oid * 7 + k * 13) % {products}) + 1)::text, 3, '0')
 WHERE k < 1 + s.oid % 3;

INSERT INTO orders_order (id, customer_email, customer_name, shipping_address, total_amount, currency, status,
                          cancel_reason, saga_id, created_at, updated_at)
SELECT s.oid, 'c' || s.oid || '@example.com', 'Customer ' || s.oid, '{{"country": "DE"}}', t.total, 'EUR',
       CASE s.outcome WHEN 'confirmed' THEN 'confirmed' ELSE 'cancelled' END,
       CASE s.outcome WHEN 'confirmed' THEN '' ELSE s.outcome END, s.saga_id, {ts}, {ts}
  FROM seed s JOIN (SELECT oid, sum(quantity * price_amount) AS total FROM seed_line GROUP BY oid) t USING (oid);

INSERT INTO orders_orderline (order_id, sku, name, quantity, unit_price_amount, currency)
SELECT oid, sku, name, quantity, price_amount, 'EUR' FROM seed_line;

INSERT INTO sagas_sagainstance (id, definition_name, definition_version, state, aggregate, aggregate_id,
                                idempotency_key, current_step, attempt, completed_steps, compensated_steps, data,
                                failure_reason, cancel_requested, stuck, stuck_reason, created_at, updated_at,
                                finished_at)
SELECT saga_id, 'order_fulfilment', 1, CASE outcome WHEN 'confirmed' THEN 'completed' ELSE 'compensated' END,
       'order', oid::text, '', '', 1, '[]', '[]', '{{}}', '', false, false, '', {ts}, {ts}, {ts}
  FROM seed;

INSERT INTO payments_gatewaycharge (idempotency_key, kind, transaction_id, charge_transaction_id, amount, currency,
                                    token, succeeded, error, created_at)
SELECT {charge_key}, 'charge', 'ch_' || s.oid, '', o.total_amount, 'EUR', 'tok_visa',
       s.outcome <> 'declined', CASE s.outcome WHEN 'declined' THEN 'card declined' ELSE '' END, {ts}
  FROM seed s JOIN orders_order o ON o.id = s.oid;

INSERT INTO payments_gatewaycharge (idempotency_key, kind, transaction_id, charge_transaction_id, amount, currency,
                                    token, succeeded, error, created_at)
SELECT {refund_key}, 'refund', 're_' || s.oid, 'ch_' || s.oid,
       o.total_amount, 'EUR', '', true, '', {ts}
  FROM seed s JOIN orders_order o ON o.id = s.oid WHERE s.outcome IN ('oos', 'rejected');

INSERT INTO payments_payment (order_id, idempotency_key, saga_id, step, provider_charge_id, amount, currency, status,
                              created_at, updated_at)
SELECT s.oid, {charge_step_key}, s.saga_id, 'charge_payment', 'ch_' || s.oid, o.total_amount, 'EUR',
       CASE s.outcome WHEN 'confirmed' THEN 'charged' ELSE 'refunded' END, {ts}, {ts}
  FROM seed s JOIN orders_order o ON o.id = s.oid WHERE s.outcome <> 'declined';

INSERT INTO payments_ledgerentry (payment_id, order_id, kind, amount, currency, idempotency_key, provider_reference,
                                  created_at)
SELECT p.id, s.oid, 'charge', p.amount, 'EUR', {charge_key}, 'ch_' || s.oid, {ts}
  FROM seed s JOIN payments_payment p ON p.order_id = s.oid;

INSERT INTO payments_ledgerentry (payment_id, order_id, kind, amount, currency, idempotency_key, provider_reference,
                                  created_at)
SELECT p.id, s.oid, 'refund', p.amount, 'EUR', {refund_key}, 're_' || s.oid,
       {ts}
  FROM seed s JOIN payments_payment p ON p.order_id = s.oid WHERE s.outcome IN ('oos', 'rejected');

INSERT INTO inventory_reservation (order_id, idempotency_key, saga_id, step, status, created_at, released_at)
SELECT oid, {reserve_step_key}, saga_id, 'reserve_stock',
       CASE outcome WHEN 'confirmed' THEN 'reserved' ELSE 'released' END,
       {ts}, CASE outcome WHEN 'confirmed' THEN NULL ELSE {ts} END
  FROM seed WHERE outcome IN ('confirmed', 'rejected');

INSERT INTO inventory_reservationline (reservation_id, product_id, quantity)
SELECT r.id, l.product_id, l.quantity FROM seed_line l JOIN inventory_reservation r ON r.order_id = l.oid;

INSERT INTO inventory_stockmovement (product_id, kind, quantity, reservation_id, idempotency_key, created_at)
SELECT rl.product_id, m.kind, rl.quantity, r.id, r.idempotency_key, {ts}
  FROM seed s
  JOIN inventory_reservation r ON r.order_id = s.oid
  JOIN inventory_reservationline rl ON rl.reservation_id = r.id
  JOIN (VALUES ('reserve'), ('release')) AS m(kind) ON m.kind = 'reserve' OR s.outcome = 'rejected';

UPDATE inventory_stocklevel sl SET reserved = sl.reserved + n.qty, updated_at = {ts}
  FROM (SELECT l.product_id, sum(l.quantity) AS qty FROM seed_line l WHERE l.outcome = 'confirmed'
         GROUP BY l.product_id) AS n
 WHERE sl.product_id = n.product_id;

INSERT INTO shipping_shipment (order_id, idempotency_key, saga_id, step, status, carrier_reference, tracking_number,
                               address, created_at, updated_at)
SELECT oid, {shipment_step_key}, saga_id, 'create_shipment', 'created', 'shp_' || oid,
       'TRK' || oid, '{{"country": "DE"}}', {ts}, {ts}
  FROM seed WHERE outcome = 'confirmed';

INSERT INTO shipping_carriershipment (idempotency_key, reference, tracking_number, accepted, error, cancelled,
                                      created_at)
SELECT {carrier_shipment_key}, 'shp_' || oid,
       CASE outcome WHEN 'confirmed' THEN 'TRK' || oid ELSE '' END, outcome = 'confirmed',
       CASE outcome WHEN 'rejected' THEN 'country not served: AQ' ELSE '' END, false, {ts}
  FROM seed WHERE outcome IN ('confirmed', 'rejected');

INSERT INTO orders_notification (order_id, kind, recipient, subject, body, sent_at)
SELECT oid, CASE outcome WHEN 'confirmed' THEN 'confirmation' ELSE 'cancellation' END, 'c' || oid || '@example.com',
       'Your order ' || oid, CASE WHEN outcome IN ('oos', 'rejected') THEN 'We refunded it.' ELSE '' END, {ts}
  FROM seed;
"""


def seed_catalog(cursor) -> None:
    cursor.execute(
        f"""
        INSERT INTO inventory_product (sku, name, price_amount, currency, active)
        SELECT 'BENCH-' || lpad(i::text, 3, '0'), 'Product ' || i, 500 + i * 10, 'EUR', true
          FROM generate_series(1, {PRODUCTS}) AS i;
        INSERT INTO inventory_stocklevel (product_id, on_hand, reserved, updated_at)
        SELECT id, 100000000, 0, now() - interval '2 hours' FROM inventory_product WHERE sku LIKE 'BENCH-%%';
        INSERT INTO inventory_stockmovement (product_id, kind, quantity, idempotency_key, created_at)
        SELECT id, 'receipt', 100000000, 'bench', now() - interval '2 hours'
          FROM inventory_product WHERE sku LIKE 'BENCH-%%';
        """
    )


def seed_orders(cursor, *, offset: int, count: int, ts: str) -> None:
    from audit.checks import charge_key_sql, refund_key_sql, shipment_key_sql
    from sagas.keys import step_key_sql

    keys = {
        "charge_key": charge_key_sql("s.saga_id"),
        "refund_key": refund_key_sql("s.saga_id"),
        "charge_step_key": step_key_sql("s.saga_id", "'charge_payment'"),
        "reserve_step_key": step_key_sql("saga_id", "'reserve_stock'"),
        "shipment_step_key": step_key_sql("saga_id", "'create_shipment'"),
        "carrier_shipment_key": shipment_key_sql("saga_id"),
    }
    cursor.execute(_SEED.format(offset=offset, count=count, products=PRODUCTS, ts=ts, **keys))
    cursor.execute("SELECT setval(pg_get_serial_sequence('orders_order', 'id'), (SELECT max(id) FROM orders_order))")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--changed", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection, transaction

    from audit.services import audit_run

    name = settings.DATABASES["default"]["NAME"]
    if not name.endswith("_bench"):
        raise SystemExit(f"refusing to seed {name!r}: use a throwaway database whose name ends in _bench")
    call_command("migrate", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM orders_order")
        existing = cursor.fetchone()[0]
    if existing == 0:
        clock = time.monotonic()
        with transaction.atomic(), connection.cursor() as cursor:
            seed_catalog(cursor)
            seed_orders(cursor, offset=0, count=options.orders, ts="now() - interval '1 hour'")
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
        print(f"seeded {options.orders} orders in {time.monotonic() - clock:.1f} s")
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM orders_order")
        total = cursor.fetchone()[0]

    full = []
    for _ in range(options.repeat):
        report = audit_run(full=True)
        assert report.clean, report.as_dict()["violations"][:5]
        full.append(report.duration_seconds)
    print(f"full sweep of {total} orders: median {statistics.median(full):.3f} s (runs: {_seconds(full)})")

    # The overlap guards against transactions still open when a run starts; here nothing
    # else writes, so the incremental run may start exactly where the last one did.
    settings.AUDIT_INCREMENTAL_OVERLAP_SECONDS = 0
    idle = audit_run()
    assert not idle.full and idle.clean
    print(f"incremental run, nothing changed: {idle.duration_seconds:.3f} s ({idle.checked_orders} orders)")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT max(id) FROM orders_order")
        seed_orders(cursor, offset=cursor.fetchone()[0], count=options.changed, ts="clock_timestamp()")
    report = audit_run()
    assert not report.full and report.clean, report.as_dict()
    print(
        f"incremental run, {options.changed} new orders: {report.duration_seconds:.3f} s "
        f"({report.checked_orders} orders checked)"
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE orders_order SET updated_at = clock_timestamp() "
            "WHERE id IN (SELECT id FROM orders_order ORDER BY random() LIMIT %s)",
            [options.changed],
        )
    report = audit_run()
    assert not report.full and report.clean, report.as_dict()
    print(
        f"incremental run, {options.changed} old orders touched: {report.duration_seconds:.3f} s "
        f"({report.checked_orders} orders checked)"
    )


def _seconds(values: list[float]) -> str:
    return ", ".join(f"{value:.3f}" for value in values)


if __name__ == "__main__":
    main()
