"""The machine's own speed, measured the way the speed targets' reference figures were.

The targets of bench_outbox, bench_saga and bench_api were set on a machine where PostgreSQL
commits about 4,900 small outbox transactions a second and a bare Celery worker pool runs
about 800 no-op ``acks_late`` tasks a second. This command measures those two figures here,
so that a benchmark's figures can be read against the machine they ran on. Its last line is
``pg_commits_per_s=... celery_noop_tasks_per_s=...``.
"""

import json
import threading
import time
import uuid

import psycopg
from celery import current_app as app
from django.core.management.base import BaseCommand
from django.db import connection

from common.redis import get_redis
from devtools.benchmarking import bench_workers, in_bench_child, rerun_isolated, stop_on_signals
from devtools.processes import database_url, wait_for

# Celery's built-in no-op task: it returns its arguments. With this project's settings it is
# acknowledged late, as every task here is.
NOOP_TASK = "celery.accumulate"
QUEUE = "default"

_INSERT = """
    INSERT INTO outbox_outboxmessage (message_id, type, destination, aggregate, aggregate_id, correlation_id,
                                      causation_id, traceparent, payload, headers, attempts, last_error)
    VALUES (%s, 'ping', 'default', 'bench', %s, '', '', '', %s, '{}', 0, '')
"""


class Command(BaseCommand):
    help = "Measure PostgreSQL's small-transaction rate and a bare Celery pool's task rate (own database)."

    def add_arguments(self, parser):
        parser.add_argument("--transactions", type=int, default=8000, help="outbox rows, one per transaction")
        parser.add_argument("--tasks", type=int, default=4000, help="no-op tasks through the worker pool")
        parser.add_argument("--concurrency", type=int, default=4, help="worker pool processes and database clients")

    def handle(self, *args, transactions: int, tasks: int, concurrency: int, **options):
        if not in_bench_child():
            argv = ["bench_machine", f"--transactions={transactions}", f"--tasks={tasks}"]
            raise SystemExit(rerun_isolated([*argv, f"--concurrency={concurrency}"], name="bench_machine", redis_db=14))
        stop_on_signals()
        commits = self._commits(transactions, clients=concurrency)
        noop = self._celery(tasks, concurrency=concurrency)
        self.stdout.write(f"transactions={transactions} tasks={tasks} concurrency={concurrency}")
        self.stdout.write(f"pg_commits_per_s={commits:.0f} celery_noop_tasks_per_s={noop:.0f}")

    def _commits(self, count: int, *, clients: int) -> float:
        """One small outbox row per transaction from ``clients`` connections at once."""
        url = database_url(connection.settings_dict)
        per_client = count // clients
        payload = json.dumps({"bench": True})

        def insert() -> None:
            with psycopg.connect(url) as conn:
                for i in range(per_client):
                    conn.execute(_INSERT, [uuid.uuid4(), str(i), payload])
                    conn.commit()

        threads = [threading.Thread(target=insert) for _ in range(clients)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return per_client * clients / (time.perf_counter() - started)

    def _celery(self, count: int, *, concurrency: int) -> float:
        """Queue ``count`` no-op tasks, then time a worker pool from its first task to the last
        one acknowledged."""
        redis = get_redis()
        with app.producer_or_acquire() as producer:
            for i in range(count):
                app.send_task(NOOP_TASK, args=[i], queue=QUEUE, producer=producer)

        def left() -> int:
            return redis.llen(QUEUE) + redis.hlen("unacked")

        worker = bench_workers(concurrency=concurrency)
        try:
            wait_for(lambda: left() < count, timeout=120, interval=0.005)
            started, remaining = time.perf_counter(), left()
            wait_for(lambda: left() == 0, timeout=600, interval=0.01)
            return remaining / (time.perf_counter() - started)
        finally:
            worker.stop()
