"""Benchmark of the operators' console with 100,000 sagas.

Re-runs itself against a database of its own (created afresh and migrated), fills it with
sagas in mixed states, their orders, step logs and commands, then loads the dashboard and
the saga list as a logged-in operator would (server time through Django's test client,
warm: the first loads are discarded, then the median of several) and prints as its last line
``dashboard_ms=... saga_list_ms=...``. The target is 300 ms for both.
"""

import statistics
import time

import psycopg
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import connection
from django.test import Client

from devtools.benchmarking import in_bench_child, rerun_isolated, stop_on_signals
from devtools.processes import database_url
from sagas.keys import step_key_sql

# Out of every 1000 sagas, by the position of the saga in the fill.
STATE_MIX = """
    CASE
        WHEN g %% 1000 < 880 THEN 'completed'
        WHEN g %% 1000 < 960 THEN 'compensated'
        WHEN g %% 1000 < 990 THEN 'running'
        WHEN g %% 1000 < 995 THEN 'compensating'
        ELSE 'failed'
    END
"""

FILL_SQL = [
    # One row per saga: its number, id, state and times, from which every table is filled.
    f"""
    CREATE TEMPORARY TABLE bench AS
    SELECT g,
           md5('bench-saga-' || g)::uuid AS saga_id,
           {STATE_MIX} AS state,
           now() - make_interval(secs => (g::float8 / %(sagas)s) * %(hours)s * 3600) AS created_at,
           0.5 + (g %% 97) / 20.0 AS seconds
      FROM generate_series(1, %(sagas)s) AS g
    """,
    """
    INSERT INTO orders_order (id, customer_email, customer_name, shipping_address, total_amount, currency,
                              status, cancel_reason, saga_id, created_at, updated_at)
    SELECT g, 'customer' || g || '@example.com', 'Customer ' || g,
           '{"line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE"}'::jsonb,
           1000 + g %% 9000, 'EUR',
           CASE state WHEN 'completed' THEN 'confirmed' WHEN 'compensated' THEN 'cancelled' ELSE 'pending' END,
           CASE state WHEN 'compensated' THEN 'payment declined: card declined' ELSE '' END,
           saga_id, created_at, created_at
      FROM bench
    """,
    "SELECT setval(pg_get_serial_sequence('orders_order', 'id'), %(sagas)s)",
    """
    INSERT INTO sagas_sagainstance (id, definition_name, definition_version, state, aggregate, aggregate_id,
        idempotency_key, current_step, attempt, completed_steps, compensated_steps, data, failure_reason,
        cancel_requested, stuck, stuck_reason, stuck_since, step_started_at, step_deadline, last_sent_at,
        created_at, updated_at, finished_at)
    SELECT saga_id, 'order_fulfilment', 1, state, 'order', g::text, 'bench-key-' || g,
           CASE state WHEN 'running' THEN 'charge_payment' WHEN 'compensating' THEN 'charge_payment'
                      WHEN 'failed' THEN 'charge_payment' ELSE '' END,
           CASE state WHEN 'completed' THEN 1 WHEN 'compensated' THEN 1 ELSE 3 END,
           CASE state WHEN 'completed'
                THEN '["create_order", "charge_payment", "reserve_stock", "create_shipment", "confirm_order"]'
                WHEN 'running' THEN '["create_order"]'
                ELSE '["create_order", "charge_payment"]' END::jsonb,
           CASE state WHEN 'compensated' THEN '["create_order"]' ELSE '[]' END::jsonb,
           jsonb_build_object('order_id', g, 'saga_id', saga_id, 'amount', 1000 + g %% 9000, 'currency', 'EUR',
                              'payment_token', 'tok_visa', 'lines', '[]'::jsonb, 'shipping_address', '{}'::jsonb),
           CASE state WHEN 'compensated' THEN 'payment declined: card declined'
                      WHEN 'failed' THEN 'compensation charge_payment failed after 3 attempts: GatewayUnavailable'
                      WHEN 'compensating' THEN 'out of stock' ELSE '' END,
           false,
           state = 'running' AND g %% 1000 >= 985,
           CASE WHEN state = 'running' AND g %% 1000 >= 985
                THEN 'charge_payment failed after 3 attempts: GatewayUnavailable: gateway answered 503' ELSE '' END,
           CASE WHEN state = 'running' AND g %% 1000 >= 985 THEN created_at + interval '10 seconds' END,
           created_at,
           CASE WHEN state IN ('running', 'compensating') THEN now() + interval '5 minutes' END,
           created_at,
           created_at, created_at,
           CASE WHEN state IN ('completed', 'compensated', 'failed')
                THEN created_at + make_interval(secs => seconds) END
      FROM bench
    """,
    # The step log: four forward steps of a completed saga, one of the others.
    """
    INSERT INTO sagas_sagastep (saga_id, step, phase, attempt, idempotency_key, command_type, command_message_id,
                                reply_message_id, outcome, reply, error, sent_at, replied_at)
    SELECT b.saga_id, s.step, 'forward', 1, """
    + step_key_sql("b.saga_id", "s.step")
    + """, s.command,
           md5('bench-command-' || b.g || '-' || s.n)::uuid, md5('bench-reply-' || b.g || '-' || s.n)::uuid,
           CASE WHEN b.state = 'completed' THEN 'success'
                WHEN b.state = 'compensated' THEN 'business_failure' ELSE 'technical_failure' END,
           '{"outcome": "success", "data": {}, "error": ""}'::jsonb, '',
           b.created_at + make_interval(secs => s.n * 0.2), b.created_at + make_interval(secs => s.n * 0.2 + 0.1)
      FROM bench b
      JOIN (VALUES (1, 'charge_payment', 'charge_payment'), (2, 'reserve_stock', 'reserve_stock'),
                   (3, 'create_shipment', 'create_shipment'), (4, 'confirm_order', 'confirm_order'))
           AS s(n, step, command)
        ON s.n <= CASE b.state WHEN 'completed' THEN 4 ELSE 1 END
    """,
    # Each command in the outbox (published, or the last few not yet: the backlog).
    """
    INSERT INTO outbox_outboxmessage (message_id, type, destination, aggregate, aggregate_id, correlation_id,
        causation_id, traceparent, payload, headers, created_at, available_at, published_at, attempts, last_error)
    SELECT st.command_message_id, st.command_type, 'payments', 'saga', st.saga_id::text, st.saga_id::text, '', '',
           '{}'::jsonb, jsonb_build_object('step', st.step, 'phase', 'forward', 'attempt', 1),
           st.sent_at, st.sent_at,
           CASE WHEN st.id > (SELECT max(id) FROM sagas_sagastep) - 200 THEN NULL ELSE st.sent_at END,
           1, ''
      FROM sagas_sagastep st
    """,
    """
    INSERT INTO outbox_deadletter (consumer, message_id, type, correlation_id, envelope, reason, traceback, poison,
                                   attempts, status, created_at, updated_at, replay_count)
    SELECT 'payments', md5('bench-dead-' || g), 'charge_payment', saga_id::text, '{}'::jsonb,
           'GatewayUnavailable: gateway answered 503', '', false, 3, 'dead', created_at, created_at, 0
      FROM bench WHERE state = 'running' AND g %% 1000 >= 985
    """,
]


class Command(BaseCommand):
    help = "Time the saga dashboard and saga list with 100,000 sagas (in a database of its own)."

    def add_arguments(self, parser):
        parser.add_argument("--sagas", type=int, default=100_000)
        parser.add_argument("--hours", type=float, default=24.0, help="the sagas' creation times span this window")
        parser.add_argument("--loads", type=int, default=7, help="timed loads of each page (after 3 warm ones)")
        parser.add_argument("--keep", action="store_true", help="keep the benchmark database afterwards")

    def handle(self, *args, sagas: int, hours: float, loads: int, keep: bool, **options):
        if not in_bench_child():
            name = "bench_dashboard"
            argv = ["bench_dashboard", f"--sagas={sagas}", f"--hours={hours}", f"--loads={loads}"]
            code = rerun_isolated(argv, name=name, redis_db=12)
            if not keep:
                _drop(f"{connection.settings_dict['NAME']}_{name}"[:63])
            raise SystemExit(code)
        stop_on_signals()
        # As in production: no query log, cached templates (the engine is built on first use).
        settings.DEBUG = False
        started = time.perf_counter()
        self._fill(sagas=sagas, hours=hours)
        self.stdout.write(f"filled {sagas} sagas in {time.perf_counter() - started:.1f} s")

        operator = get_user_model().objects.create_superuser("bench", "bench@example.com", "bench-password")
        client = Client(HTTP_HOST="localhost")
        client.force_login(operator)
        with connection.cursor() as cursor:
            cursor.execute("SELECT id FROM sagas_sagainstance WHERE stuck ORDER BY stuck_since LIMIT 1")
            stuck_id = cursor.fetchone()[0]
        pages = {
            "dashboard": "/admin/sagas/sagainstance/dashboard/",
            "saga_list": "/admin/sagas/sagainstance/",
            "saga_list_stuck": "/admin/sagas/sagainstance/?stuck__exact=1&step=charge_payment",
            "saga_page": f"/admin/sagas/sagainstance/{stuck_id}/change/",
        }
        timings = {name: _median_ms(client, url, loads=loads) for name, url in pages.items()}
        self.stdout.write(
            f"sagas={sagas} loads={loads} "
            + " ".join(f"{name}_ms={ms:.1f}" for name, ms in timings.items() if name not in ("dashboard", "saga_list"))
        )
        self.stdout.write(f"dashboard_ms={timings['dashboard']:.1f} saga_list_ms={timings['saga_list']:.1f}")

    def _fill(self, *, sagas: int, hours: float) -> None:
        with connection.cursor() as cursor:
            for statement in FILL_SQL:
                cursor.execute(statement, {"sagas": sagas, "hours": hours})
            cursor.execute("DROP TABLE bench")
        if connection.in_atomic_block:
            return  # a smoke test inside a test transaction: VACUUM cannot run there
        # Fresh statistics and visibility maps, as autovacuum would have them on a live system.
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")


def _median_ms(client: Client, url: str, *, loads: int, warm: int = 3) -> float:
    def load() -> float:
        started = time.perf_counter()
        response = client.get(url)
        elapsed = (time.perf_counter() - started) * 1000
        assert response.status_code == 200, f"{url} answered {response.status_code}"
        return elapsed

    for _ in range(warm):
        load()
    return statistics.median(load() for _ in range(loads))


def _drop(name: str) -> None:
    admin = {**connection.settings_dict, "NAME": "postgres"}
    with psycopg.connect(database_url(admin), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
