"""The broker restarts under load: no process of the system dies of it, and no saga is lost.

A Redis of the test's own on a free port (never the system's), killed and started again 20
times while orders flow through the storefront API; the web, the worker and beat talk to it
and only to it. Each restart loses everything the broker held (queues and unacknowledged
messages): the sweeper must recover the lost commands, and every process must keep running
under its first pid, since a supervisor restarting a dead one is the second line of defence,
not the first.
"""

import importlib
import random
import threading
import time
import uuid
from pathlib import Path

import pytest

from devtools.chaos import ChaosSystem, ChaosTally, RestartableRedis, StorefrontClient, free_port
from devtools.processes import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

RESTARTS = 20
RESTART_EVERY = 2.5  # seconds between two restarts
DOWNTIME = 0.3  # seconds the broker stays down
ORDER_RATE = 2.0  # orders per second, all along the restarts
ADDRESS = {"line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE"}


def _seed() -> str:
    from django.apps import apps
    from django.contrib.auth import get_user_model

    from inventory.services import product_upsert, stock_receive
    from orders.api.tokens import api_token_issue

    # The test database is emptied between tests, beat's schedule with it: set it up again.
    importlib.import_module("outbox.migrations.0002_periodic_tasks").create_schedule(apps, None)
    stock_receive(product=product_upsert(sku="RESTART-1", name="Kettle", price_amount=2500), quantity=10**6)
    user = get_user_model().objects.create_user("restart-client", password=None)
    return api_token_issue(user=user)


def _place_orders(client: StorefrontClient, tally: ChaosTally, stop: threading.Event, statuses: list[int]) -> None:
    started = time.monotonic()
    index = 0
    while not stop.is_set():
        delay = started + index / ORDER_RATE - time.monotonic()
        if delay > 0 and stop.wait(delay):
            return
        index += 1
        token = "tok_chargeDeclined" if random.random() < 0.1 else "tok_visa"
        body = {
            "customer": {"email": "ann@example.com", "name": "Ann Smith"},
            "lines": [{"sku": "RESTART-1", "quantity": 1}],
            "payment": {"token": token},
            "shipping_address": ADDRESS,
        }
        status, _ = client.until_answered("POST", "/api/v1/orders/", tally, body=body, key=str(uuid.uuid4()))
        statuses.append(status)


def test_twenty_broker_restarts_under_load_kill_no_process_and_every_saga_ends(worker_env, tmp_path: Path):
    from sagas.models import SagaInstance, SagaState

    redis = RestartableRedis(free_port(), tmp_path / "redis")
    redis.start()
    broker = f"redis://127.0.0.1:{redis.port}/0"
    env = {
        **worker_env,
        "REDIS_URL": broker,
        "CELERY_BROKER_URL": broker,
        # A command lost with the broker is resent after 15 s (doubling per attempt), not the
        # tests' 5 s: on a busy machine the queue can be that late, and a resend that overtakes
        # its own command only adds copies for the worker to answer as stale.
        "SAGA_RESEND_AFTER_SECONDS": "15",
        # The worker is not to yield its CPU to other processes on a machine the test shares.
        "WORKER_NICE": "0",
    }
    system = ChaosSystem(concurrency=2, log_dir=tmp_path / "logs", env=env)
    token = _seed()
    tally = ChaosTally()
    stop = threading.Event()
    statuses: list[int] = []
    try:
        system.start()
        pids = {"worker": system.worker.process.pid, "beat": system.beat.pid, "web": system.web.process.pid}
        loader = threading.Thread(
            target=_place_orders, args=(StorefrontClient(system.port, token), tally, stop, statuses), daemon=True
        )
        loader.start()
        for _ in range(RESTARTS):
            time.sleep(RESTART_EVERY)
            redis.restart(downtime=DOWNTIME)
            alive = {"worker": system.worker.running, "beat": system.beat.poll() is None}
            assert all(alive.values()), f"died on a broker restart: {alive}\n{_logs(system)}"
        stop.set()
        loader.join(timeout=150)
        print(f"{RESTARTS} restarts done; {len(statuses)} orders placed")
        waited = time.monotonic()

        assert len(statuses) >= RESTARTS * RESTART_EVERY * ORDER_RATE * 0.8, len(statuses)
        assert set(statuses) == {202}, f"orders not accepted: {sorted(set(statuses))}"

        active = [SagaState.RUNNING, SagaState.COMPENSATING]

        def settled() -> bool:
            assert system.worker.running and system.beat.poll() is None, _logs(system)
            return not SagaInstance.objects.filter(state__in=active).exists()

        try:
            wait_for(settled, timeout=150, interval=0.5)
        except AssertionError:
            still = SagaInstance.objects.filter(state__in=active)
            rows = list(still.values_list("current_step", "state", "attempt", "last_sent_at", "step_deadline")[:20])
            raise AssertionError(f"{still.count()} sagas still active: {rows}\n{_logs(system)}") from None
        print(f"every saga ended {time.monotonic() - waited:.1f} s after the last restart")
        sagas = SagaInstance.objects.all()
        assert sagas.count() == len(statuses)
        assert not sagas.filter(stuck=True).exists(), list(sagas.filter(stuck=True).values("id", "stuck_reason"))
        assert sagas.filter(state=SagaState.COMPLETED).exists() and sagas.filter(state=SagaState.COMPENSATED).exists()

        now = {"worker": system.worker.process.pid, "beat": system.beat.pid, "web": system.web.process.pid}
        assert now == pids
        assert system.worker.running and system.beat.poll() is None and system.web.process.poll() is None, _logs(system)
        assert "Unrecoverable error" not in system.worker.tail(100_000)
    finally:
        stop.set()
        system.stop()
        redis.kill()


def _logs(system: ChaosSystem) -> str:
    beat = (system.log_dir / "beat.log").read_text(errors="replace").splitlines()[-30:]
    return f"--- worker ---\n{system.worker.tail(80)}\n--- beat ---\n" + "\n".join(beat)
