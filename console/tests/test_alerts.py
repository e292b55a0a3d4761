"""Alerts, against a real HTTP receiver on 127.0.0.1: one alert per incident however many sagas
it touches, with a link to the console; a receiver that fails is retried with backoff, and one
that never answers is given up on and shown; a vanished worker is alerted from its heartbeat."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone

from audit.models import Violation
from common.heartbeat import BEAT, WORKER, heartbeat_clear, heartbeat_write, liveness
from common.redis import get_redis
from console.alert_delivery import alerts_send
from console.alerts import alerts_check
from console.models import AlertDelivery, Incident
from devtools.processes import ALL_QUEUES, WorkerProcess, wait_for
from outbox.models import DeadLetter
from testing.saga_states import make_catalog, stuck

pytestmark = pytest.mark.django_db

BASE = "https://console.example"


class Receiver:
    """An HTTP server in a thread that records each JSON body and answers the next status of
    ``statuses`` (200 once they run out)."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.statuses: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/backoffice"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(settings):
    server = Receiver()
    settings.ALERT_WEBHOOK_URL = server.url
    settings.CONSOLE_BASE_URL = BASE
    settings.ALERT_RETRY_BASE_SECONDS = 10
    settings.ALERT_MAX_ATTEMPTS = 4
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def processes_alive(settings):
    """A live worker and beat, by their heartbeats, unless a test stops one."""
    settings.HEARTBEAT_TTL_SECONDS = 120
    for role in (WORKER, BEAT):
        heartbeat_write(role=role, name="test")
    yield
    for role in (WORKER, BEAT):
        heartbeat_clear(role=role, name="test")


def test_several_sagas_stuck_at_one_step_are_one_alert_with_a_link_to_them(receiver):
    make_catalog()
    sagas = [stuck() for _ in range(3)]

    alerts_check()
    alerts_send()
    alerts_check()  # the next checks find the same incident open: no second alert
    alerts_send()

    assert len(receiver.bodies) == 1
    body = receiver.bodies[0]
    assert (body["incident"], body["status"], body["count"]) == ("stuck:charge_payment", "opened", 3)
    assert body["title"] == "3 saga(s) stuck at charge_payment"
    assert body["url"] == BASE + reverse("admin:sagas_sagainstance_changelist") + "?attention=stuck&step=charge_payment"
    assert body["console_url"] == BASE + reverse("admin:sagas_attention")
    incident = Incident.objects.get()
    assert incident.closed_at is None and incident.last_sent_at is not None
    assert AlertDelivery.objects.get().status == "sent"

    for saga in sagas:  # repaired: the incident closes, and a new one would alert again
        saga.stuck = False
        saga.save(update_fields=["stuck"])
    alerts_check()
    incident.refresh_from_db()
    assert incident.closed_at is not None


def test_a_failing_receiver_is_retried_with_backoff_until_it_answers(receiver):
    receiver.statuses = [503, 502]
    _dead_letter("payments")
    now = timezone.now()

    alerts_check(now=now)
    alerts_send(now=now)
    delivery = AlertDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("pending", 1, "the receiver answered 503")
    assert delivery.next_attempt_at == now + timedelta(seconds=10)
    alerts_send(now=now + timedelta(seconds=9))  # not due yet
    assert len(receiver.bodies) == 1
    alerts_send(now=now + timedelta(seconds=10))
    delivery.refresh_from_db()
    assert (delivery.attempts, delivery.next_attempt_at) == (2, now + timedelta(seconds=30)), "10 s, then 20 s"
    alerts_send(now=now + timedelta(seconds=30))

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("sent", 3)
    assert [body["incident"] for body in receiver.bodies] == ["dead_letters:payments"] * 3
    assert {body["delivery_id"] for body in receiver.bodies} == {delivery.pk}, "the same alert, for deduplication"
    assert [body["attempt"] for body in receiver.bodies] == [1, 2, 3]


def test_a_receiver_that_never_answers_is_given_up_on_and_shown_to_operators(receiver, settings, client):
    settings.ALERT_WEBHOOK_URL = f"http://127.0.0.1:{_closed_port()}/hook"
    _dead_letter("shipping")
    now = timezone.now()
    alerts_check(now=now)
    for minutes in range(5):
        alerts_send(now=now + timedelta(minutes=minutes))  # never raises for the receiver's failure

    delivery = AlertDelivery.objects.get()
    assert (delivery.status, delivery.attempts) == ("failed", 4)
    assert "Connection refused" in delivery.last_error
    admin = get_user_model().objects.create_superuser("ada", password="pw")
    client.force_login(admin)
    page = client.get(reverse("admin:sagas_attention")).content.decode()
    assert 'id="alerts-undelivered"' in page and "1 dead letter(s) of shipping" in page
    deliveries = client.get(reverse("admin:console_alertdelivery_changelist")).content.decode()
    assert "Connection refused" in deliveries
    assert "dead_letters:shipping" in client.get(reverse("admin:console_incident_changelist")).content.decode()


def test_a_vanished_worker_is_alerted_once_and_the_incident_closes_when_it_is_back(receiver):
    heartbeat_clear(role=WORKER, name="test")

    alerts_check()
    alerts_send()
    alerts_check()
    alerts_send()

    assert [(body["incident"], body["title"]) for body in receiver.bodies] == [("process:worker", "No live worker")]
    assert "heartbeat" in receiver.bodies[0]["detail"]
    heartbeat_write(role=WORKER, name="test")
    alerts_check()
    assert Incident.objects.get(key="process:worker").closed_at is not None


def test_violations_of_one_kind_are_one_alert(receiver):
    now = timezone.now()
    for order in (1, 2):
        Violation.objects.create(
            kind="cancelled_money_held",
            key=f"order:{order}",
            detail="charged 4500, refunded 0",
            first_seen=now,
            last_seen=now,
        )

    alerts_check()
    alerts_send()

    assert [(body["incident"], body["count"]) for body in receiver.bodies] == [("violations:cancelled_money_held", 2)]
    assert body_url_path(receiver.bodies[0]) == reverse("admin:audit_violation_changelist")


def body_url_path(body: dict) -> str:
    return body["url"].removeprefix(BASE).split("?")[0]


def test_operators_are_emailed_too(settings, mailoutbox):
    settings.ALERT_EMAILS = ["ops@example.com", "oncall@example.com"]
    settings.CONSOLE_BASE_URL = BASE
    _dead_letter("inventory")

    alerts_check()
    alerts_send()
    alerts_send()

    assert len(mailoutbox) == 1
    mail = mailoutbox[0]
    assert mail.to == ["ops@example.com", "oncall@example.com"]
    assert mail.subject == "[backoffice] 1 dead letter(s) of inventory"
    assert BASE + reverse("admin:outbox_deadletter_changelist") in mail.body


def test_without_a_receiver_incidents_are_kept_and_nothing_is_sent():
    _dead_letter("payments")
    alerts_check()
    assert Incident.objects.get().key == "dead_letters:payments"
    assert not AlertDelivery.objects.exists()


def _dead_letter(consumer: str) -> DeadLetter:
    return DeadLetter.objects.create(
        consumer=consumer, message_id=f"m-{consumer}", type="charge_payment", envelope={}, reason="GatewayUnavailable"
    )


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_alerts_that_beat_has_vanished(receiver, worker_env, tmp_path):
    """The worker's own alert watch (console/alert_watch.py) notices that no beat renews its
    heartbeat and posts the alert, with no beat to schedule anything."""
    heartbeat_clear(role=BEAT, name="test")
    env = {
        **worker_env,
        "ALERT_WATCH_ENABLED": "true",
        "ALERT_CHECK_SECONDS": "1",
        "ALERT_WEBHOOK_URL": receiver.url,
        "CONSOLE_BASE_URL": BASE,
    }
    worker = WorkerProcess(env, tmp_path / "alert-worker.log", concurrency=1, queues=["default"], name="alerts")
    worker.start()
    try:
        wait_for(lambda: receiver.bodies, timeout=30, message="the worker never alerted")
    finally:
        worker.stop()
    assert [body["incident"] for body in receiver.bodies] == ["process:beat"]
    assert receiver.bodies[0]["console_url"] == BASE + reverse("admin:sagas_attention")


@pytest.mark.django_db(transaction=True)
def test_a_real_beat_alerts_that_the_worker_has_vanished(receiver, worker_env, celery_worker, tmp_path):
    """Beat runs the check from its tick: with no worker alive, no task could."""
    if celery_worker.running:
        celery_worker.stop()  # the session's worker (the next test that needs one starts it again)
    for beat_of_a_worker in liveness().processes.get(WORKER, []):
        heartbeat_clear(role=WORKER, name=beat_of_a_worker.name)
    env = {
        **worker_env,
        "ALERT_WATCH_ENABLED": "true",
        "ALERT_CHECK_SECONDS": "1",
        "ALERT_WEBHOOK_URL": receiver.url,
        "CONSOLE_BASE_URL": BASE,
    }
    with open(tmp_path / "alert-beat.log", "ab") as log:
        beat = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "beat", "--loglevel", "INFO"],
            cwd=django_settings.BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for(lambda: receiver.bodies, timeout=30, message="beat never alerted")
        finally:
            os.killpg(beat.pid, signal.SIGTERM)
            beat.wait(timeout=20)
            get_redis().delete(*ALL_QUEUES)  # what it scheduled meanwhile, for no worker
    assert [body["incident"] for body in receiver.bodies] == ["process:worker"]
