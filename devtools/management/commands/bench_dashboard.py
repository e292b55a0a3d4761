"""Benchmark of the operators' console with 100,000 sagas, 10,000 dead letters and 1,000
open violations.

Re-runs itself against a database of its own (created afresh and migrated), fills it with
sagas in mixed states (stuck, failed, retrying, overdue among them), their orders, payments,
ledger entries, shipments, step logs and commands, dead letters and violations, then loads the
pages as a logged-in operator would (server time through Django's test client, warm: the
first loads are discarded): the dashboard and the saga list (median), then the "needs
attention" view and the search, by every kind of term (median and p95). It prints
``dashboard_ms=... saga_list_ms=...`` and, as its last line,
``needs_attention_ms=... search_ms=... needs_attention_p95_ms=... search_p95_ms=...``.
The target is 300 ms for each.
"""

import hashlib
import statistics
import time
import uuid
from collections.abc import Sequence
from urllib.parse import urlencode

import psycopg
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import connection
from django.test import Client

from devtools.benchmarking import collect_static_for_run, in_bench_child, percentile, rerun_isolated, stop_on_signals
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
    SELECT saga_id, 'order_fulfilment', 1, state, 'order', g::text, 'api:1:bench-key-' || g,
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
           -- a few running sagas past their deadline, not flagged yet (the sweeper has not run)
           CASE WHEN state = 'running' AND g %% 1000 BETWEEN 975 AND 984 THEN now() - interval '1 minute'
                WHEN state IN ('running', 'compensating') THEN now() + interval '5 minutes' END,
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
    # Dead letters: every stuck saga's, then others', up to the number asked for.
    """
    INSERT INTO outbox_deadletter (consumer, message_id, type, correlation_id, envelope, reason, traceback, poison,
                                   attempts, status, created_at, updated_at, replay_count)
    SELECT 'payments', md5('bench-dead-' || g), 'charge_payment', saga_id::text, '{}'::jsonb,
           'GatewayUnavailable: gateway answered 503', '', false, 3, 'dead', created_at, created_at, 0
      FROM bench
     ORDER BY (state = 'running' AND g %% 1000 >= 985) DESC, g
     LIMIT %(dead_letters)s
    """,
    # The money and shipment of every completed saga, for the search by reference and tracking number.
    """
    INSERT INTO payments_payment (id, order_id, idempotency_key, saga_id, step, provider_charge_id, amount, currency,
                                  status, created_at, updated_at)
    SELECT g, g, saga_id::text || ':charge_payment', saga_id, 'charge_payment', 'ch_bench_' || g, 1000 + g %% 9000,
           'EUR', 'charged', created_at, created_at
      FROM bench WHERE state = 'completed'
    """,
    "SELECT setval(pg_get_serial_sequence('payments_payment', 'id'), %(sagas)s)",
    """
    INSERT INTO payments_ledgerentry (payment_id, order_id, kind, amount, currency, idempotency_key,
                                      provider_reference, created_at)
    SELECT id, order_id, 'charge', amount, currency, idempotency_key || ':gateway', provider_charge_id, created_at
      FROM payments_payment
    """,
    """
    INSERT INTO shipping_shipment (order_id, idempotency_key, saga_id, step, status, carrier_reference,
                                   tracking_number, address, created_at, updated_at)
    SELECT g, saga_id::text || ':create_shipment', saga_id, 'create_shipment', 'created', 'shp_bench_' || g,
           'TRK' || lpad(g::text, 9, '0'), '{}'::jsonb, created_at, created_at
      FROM bench WHERE state = 'completed'
    """,
    # Open violations, about orders of finished sagas.
    """
    INSERT INTO audit_violation (kind, key, involved, detail, first_seen, last_seen, resolved_at)
    SELECT (ARRAY['confirmed_stock_wrong', 'cancelled_money_held', 'payment_ledger_mismatch'])[1 + g %% 3],
           'order:' || g, jsonb_build_object('order', g, 'saga', saga_id::text),
           'planted by bench_dashboard', created_at, now(), NULL
      FROM bench ORDER BY g DESC LIMIT %(violations)s
    """,
]


class Command(BaseCommand):
    help = "Time the saga dashboard and saga list with 100,000 sagas (in a database of its own)."

    def add_arguments(self, parser):
        parser.add_argument("--sagas", type=int, default=100_000)
        parser.add_argument("--dead-letters", type=int, default=10_000)
        parser.add_argument("--violations", type=int, default=1_000)
        parser.add_argument("--redis-db", type=int, default=12, help="the Redis database of the run (emptied)")
        parser.add_argument("--hours", type=float, default=24.0, help="the sagas' creation times span this window")
        parser.add_argument("--loads", type=int, default=7, help="timed loads of each page (after 3 warm ones)")
        parser.add_argument("--keep", action="store_true", help="keep the benchmark database afterwards")

    def handle(
        self,
        *args,
        sagas: int,
        dead_letters: int,
        violations: int,
        redis_db: int,
        hours: float,
        loads: int,
        keep: bool,
        **options,
    ):
        if not in_bench_child():
            name = "bench_dashboard"
            argv = [
                "bench_dashboard",
                f"--sagas={sagas}",
                f"--dead-letters={dead_letters}",
                f"--violations={violations}",
                f"--hours={hours}",
                f"--loads={loads}",
            ]
            code = rerun_isolated(argv, name=name, redis_db=redis_db)
            if not keep:
                _drop(f"{connection.settings_dict['NAME']}_{name}"[:63])
            raise SystemExit(code)
        stop_on_signals()
        collect_static_for_run()
        # As in production: no query log, cached templates (the engine is built on first use).
        settings.DEBUG = False
        started = time.perf_counter()
        self._fill(sagas=sagas, hours=hours, dead_letters=dead_letters, violations=violations)
        self.stdout.write(
            f"filled {sagas} sagas, {dead_letters} dead letters, {violations} violations"
            f" in {time.perf_counter() - started:.1f} s"
        )

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

        # The operators' landing page and the search, each over repeated loads (median and p95).
        attention = _timings_ms(client, ["/admin/sagas/sagainstance/attention/"], loads=max(loads, 20))
        probe = min(sagas, (sagas // 2) // 1000 * 1000 + 421)  # a completed saga's order (see STATE_MIX)
        terms = _search_terms(probe, saga_id=_saga_of_order(probe))
        searches = {kind: _timings_ms(client, [_search_url(term)], loads=max(loads, 5)) for kind, term in terms.items()}
        self.stdout.write(
            "search_by_kind_ms: " + " ".join(f"{kind}={statistics.median(ms):.1f}" for kind, ms in searches.items())
        )
        every_search = [ms for values in searches.values() for ms in values]
        self.stdout.write(
            f"needs_attention_ms={statistics.median(attention):.1f} search_ms={statistics.median(every_search):.1f}"
            f" needs_attention_p95_ms={percentile(attention, 0.95):.1f}"
            f" search_p95_ms={percentile(every_search, 0.95):.1f}"
        )

    def _fill(self, *, sagas: int, hours: float, dead_letters: int, violations: int) -> None:
        params = {"sagas": sagas, "hours": hours, "dead_letters": dead_letters, "violations": violations}
        with connection.cursor() as cursor:
            for statement in FILL_SQL:
                cursor.execute(statement, params)
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


def _saga_of_order(order_id: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT saga_id FROM orders_order WHERE id = %s", [order_id])
        return str(cursor.fetchone()[0])


def _search_terms(g: int, *, saga_id: str) -> dict[str, str]:
    """One term of each kind the search box takes, about order ``g`` (a completed one)."""
    return {
        "order_id": str(g),
        "saga_id": saga_id,
        "email_fragment": f"CUSTOMER{g}@Example",
        "email_broad": "customer12",
        "charge_reference": f"ch_bench_{g}",
        "tracking_number": f"TRK{g:09d}",
        "idempotency_key": f"bench-key-{g}",
        "message_id": _uuid_of_md5(f"bench-command-{g}-1"),
        "nothing": "no-such-thing-anywhere",
    }


def _uuid_of_md5(text: str) -> str:
    """As the fill's ``md5(text)::uuid``."""
    return str(uuid.UUID(hashlib.md5(text.encode()).hexdigest()))


def _search_url(term: str) -> str:
    return "/admin/sagas/sagainstance/?" + urlencode({"q": term})


def _timings_ms(client: Client, urls: Sequence[str], *, loads: int, warm: int = 3) -> list[float]:
    """Server time of each load after ``warm`` discarded ones; a search that finds one saga
    answers with its redirect (302), which is what the operator waits for."""

    def load(url: str) -> float:
        started = time.perf_counter()
        response = client.get(url)
        elapsed = (time.perf_counter() - started) * 1000
        assert response.status_code in (200, 302), f"{url} answered {response.status_code}"
        return elapsed

    for url in urls:
        for _ in range(warm):
            load(url)
    return [load(url) for _ in range(loads) for url in urls]


def _drop(name: str) -> None:
    admin = {**connection.settings_dict, "NAME": "postgres"}
    with psycopg.connect(database_url(admin), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
