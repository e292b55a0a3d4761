"""A system without a live worker or beat says so on the dashboard within seconds, from the
heartbeats they write; sagas that waited on the dead worker are flagged once one is back."""

import os
import signal
from datetime import timedelta

import pytest
from django.apps import apps
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from common.heartbeat import BEAT, WORKER, heartbeat_clear, heartbeat_write, liveness
from config.celery import app as celery_app
from conftest import drop_pending_messages
from console.operators import operators_group_ensure
from devtools.processes import wait_for
from orders.services import Customer, LineInput, order_place
from outbox.relay import relay_batch
from sagas.models import SagaInstance
from testing.saga_states import make_catalog

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

DASHBOARD = "/admin/sagas/sagainstance/dashboard/?fragment=1"


@pytest.fixture
def operator_client() -> Client:
    user = get_user_model().objects.create_user("olga", password="pw", is_staff=True)
    user.groups.add(operators_group_ensure(apps))
    client = Client()
    client.force_login(user)
    return client


def _dashboard(client: Client) -> str:
    response = client.get(DASHBOARD)
    assert response.status_code == 200
    return response.content.decode()


def _kill(worker) -> None:
    """SIGKILL the whole worker, as the OOM killer would: no clean shutdown, no heartbeat cleared."""
    os.killpg(worker.process.pid, signal.SIGKILL)
    worker.process.wait(timeout=10)
    worker.process = None
    worker.log.close()


def test_the_dashboard_says_within_seconds_that_no_worker_is_alive_and_stops_once_one_is_back(
    live_system, operator_client
):
    heartbeat_write(role=BEAT, name="test-beat")  # this test is about the worker
    try:
        wait_for(lambda: liveness().alive(WORKER), timeout=10, message="the worker wrote no heartbeat")
        page = _dashboard(operator_client)
        assert 'id="processes-down"' not in page, page

        _kill(live_system)

        # Its last heartbeat expires within the TTL; the dashboard says so at its next refresh.
        def worker_missing() -> bool:
            heartbeat_write(role=BEAT, name="test-beat")  # kept alive: its TTL is shorter than the wait
            return "No live worker" in _dashboard(operator_client)

        wait_for(
            worker_missing,
            timeout=settings.HEARTBEAT_TTL_SECONDS + 3,
            message="the dashboard did not notice the dead worker",
        )
        assert liveness().missing == [WORKER]

        live_system.start()
        heartbeat_write(role=BEAT, name="test-beat")
        wait_for(lambda: "No live worker" not in _dashboard(operator_client), timeout=10)
    finally:
        heartbeat_clear(role=BEAT, name="test-beat")


def test_the_dashboard_says_when_no_beat_is_alive(live_system, operator_client):
    wait_for(lambda: liveness().alive(WORKER), timeout=10)
    assert "No live beat" in _dashboard(operator_client)  # the test session runs no beat


def test_a_saga_whose_command_died_with_the_worker_is_flagged_stuck_at_the_first_sweep_once_one_is_back(
    live_system, operator_client
):
    make_catalog()
    _kill(live_system)
    order = order_place(
        customer=Customer(email="ann@example.com", name="Ann Smith"),
        lines=[LineInput(sku="SKU-A", quantity=1)],
        payment_token="tok_visa",
        shipping_address={"line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE"},
    ).order
    relay_batch()
    drop_pending_messages()  # the command went down with the worker (and a broker that kept nothing)
    # The worker stays away past the step's deadline.
    SagaInstance.objects.filter(pk=order.saga_id).update(
        step_deadline=timezone.now() - timedelta(seconds=1), last_sent_at=timezone.now() - timedelta(minutes=10)
    )

    live_system.start()
    celery_app.send_task("sagas.sweep")  # beat's next sweep, run by the worker that is back
    wait_for(lambda: SagaInstance.objects.get(pk=order.saga_id).stuck, timeout=20, message=live_system.tail(30))
    saga = SagaInstance.objects.get(pk=order.saga_id)
    assert "deadline" in saga.stuck_reason
    assert "stuck-row" in _dashboard(operator_client)
