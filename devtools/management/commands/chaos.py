"""``manage.py chaos``: the real system under load and every fault, then the auditor.

Its last line is ``orders=... confirmed=... cancelled=... stuck=... violations=... worker_deaths=...
sagas_per_s=...``; the exit code is 0 only when there are no violations, no worker died by itself
(its planned kills do not count) and every saga is terminal or flagged stuck with a reason. It
runs in a database and a Redis server of its own.
"""

import json
import os
import threading
import time

from django.core.management.base import BaseCommand

from devtools.benchmarking import in_bench_child, rerun_isolated, stop_on_signals
from devtools.chaos import (
    ChaosPlan,
    ChaosRun,
    ChaosSystem,
    RestartableRedis,
    free_port,
    harness_connection_name,
)
from devtools.processes import ROOT

RATES = [
    ("duplicate_delivery", "share of messages the relay sends twice"),
    ("reorder_delivery", "share of relay batches sent out of order"),
    ("gateway_transient", "share of gateway calls failing with a 5xx"),
    ("gateway_timeout_after_charge", "share of charges that time out after the money moved"),
    ("carrier_transient", "share of carrier calls failing with a 5xx"),
    ("declined", "share of orders paid with a declined card"),
    ("sold_out", "share of orders for a product that sells out"),
    ("cancel", "share of orders the client cancels right after placing them"),
    ("client_retry", "share of orders the client sends twice with the same key"),
]


class Command(BaseCommand):
    help = "Run orders through the real system under faults and audit the outcome (own database and Redis)."

    def add_arguments(self, parser):
        defaults = ChaosPlan()
        parser.add_argument("--orders", type=int, default=defaults.orders)
        parser.add_argument("--rate", type=float, default=defaults.rate, help="orders per second")
        parser.add_argument("--clients", type=int, default=defaults.clients)
        parser.add_argument("--concurrency", type=int, default=defaults.concurrency, help="worker pool processes")
        for name, text in RATES:
            parser.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(defaults, name), help=text)
        parser.add_argument("--kill-every", type=float, nargs=2, default=defaults.kill_every, metavar=("MIN", "MAX"))
        parser.add_argument("--worker-restart-every", type=float, default=defaults.worker_restart_every)
        parser.add_argument("--redis-restarts", type=int, default=defaults.redis_restarts)
        parser.add_argument("--pg-terminate-every", type=float, default=defaults.pg_terminate_every)
        parser.add_argument("--quiesce-timeout", type=float, default=defaults.quiesce_timeout)
        parser.add_argument("--json", action="store_true", help="print the summary as JSON before the last line")

    def handle(self, *args, **options):
        plan = ChaosPlan(
            orders=options["orders"],
            rate=options["rate"],
            clients=options["clients"],
            concurrency=options["concurrency"],
            kill_every=tuple(options["kill_every"]),
            worker_restart_every=options["worker_restart_every"],
            redis_restarts=options["redis_restarts"],
            pg_terminate_every=options["pg_terminate_every"],
            quiesce_timeout=options["quiesce_timeout"],
            **{name: options[name] for name, _ in RATES},
        )
        if not in_bench_child():
            raise SystemExit(self._rerun(options))
        stop_on_signals()
        raise SystemExit(self._run(plan, as_json=options["json"]))

    def _rerun(self, options: dict) -> int:
        port = free_port()
        argv = ["chaos"]
        for key, value in options.items():
            if key in {"verbosity", "settings", "pythonpath", "traceback", "no_color", "force_color", "skip_checks"}:
                continue
            flag = f"--{key.replace('_', '-')}"
            if isinstance(value, bool):
                argv += [flag] if value else []
            elif isinstance(value, list | tuple):
                argv += [flag, *map(str, value)]
            else:
                argv += [flag, str(value)]
        env = {
            "CHAOS_REDIS_PORT": str(port),
            "FAULT_INJECTION": "true",
            # Under faults the sweeper re-sends unanswered commands after 20 s (doubling per
            # attempt), not a minute: soon enough after a broker restart, late enough not to
            # pile resends onto a backlog.
            "SAGA_RESEND_AFTER_SECONDS": "20",
            "SAGA_STEP_DEADLINE_SECONDS": "300",
            "OUTBOX_RETRY_BASE_SECONDS": "0.2",
            "OUTBOX_RETRY_MAX_SECONDS": "2",
            "SAGA_RETRY_BASE_SECONDS": "0.2",
            "SAGA_RETRY_MAX_SECONDS": "2",
            "SAGA_STEP_MAX_ATTEMPTS": "8",
            "API_THROTTLE_RATE": "100000/min",
        }
        return rerun_isolated(argv, name="chaos", redis_url=f"redis://127.0.0.1:{port}/0", extra_env=env)

    def _run(self, plan: ChaosPlan, *, as_json: bool) -> int:

        log_dir = ROOT / "artifacts" / "chaos"
        redis = RestartableRedis(int(os.environ["CHAOS_REDIS_PORT"]), log_dir / "redis")
        redis.start()
        system = ChaosSystem(concurrency=plan.concurrency, log_dir=log_dir)
        run = ChaosRun(plan, redis=redis, system=system)
        try:
            harness_connection_name()
            tokens = run.seed()
            system.start()
            self.stdout.write(f"system up on 127.0.0.1:{system.port}; {plan.orders} orders at {plan.rate}/s")

            def injector() -> None:
                harness_connection_name()
                run.inject_faults()

            thread = threading.Thread(target=injector, daemon=True)
            thread.start()
            started = run.place_orders(tokens)
            run.stop_faults.set()
            thread.join(timeout=30)
            self.stdout.write(f"load done in {time.monotonic() - started:.1f} s; waiting for quiescence")
            settled = run.quiesce()
            harness_connection_name()
            summary = run.summary(started, settled)
        finally:
            system.stop()
            redis.kill()
        if as_json:
            self.stdout.write(json.dumps(summary, indent=2, default=str))
        else:
            for key, value in summary.items():
                self.stdout.write(f"  {key}: {value}")
        ok = (
            summary["violations"] == 0
            and summary["worker_deaths"] == 0
            and summary["settled"]
            and summary["stuck_without_reason"] == 0
            and summary["idempotency_mismatches"] == 0
            and summary["orders"] == plan.orders
        )
        self.stdout.write(
            f"orders={summary['orders']} confirmed={summary['confirmed']} cancelled={summary['cancelled']}"
            f" stuck={summary['stuck']} violations={summary['violations']} worker_deaths={summary['worker_deaths']}"
            f" sagas_per_s={summary['sagas_per_s']}"
        )
        return 0 if ok else 1
