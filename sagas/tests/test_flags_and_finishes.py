"""A saga is flagged stuck once per incident and finishes once: the flags, the events and the
counters an operator reads must agree with what happened to the saga.

Counters are process-global and other tests move them too: each test measures deltas."""

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone
from prometheus_client import REGISTRY

from outbox.models import OutboxMessage
from sagas.definition import definition_for
from sagas.locks import lock_saga
from sagas.models import Outcome, SagaEvent, SagaInstance, SagaState
from sagas.orchestrator import saga_sweep
from sagas.rows import saga_save
from sagas.transitions import transition_retry_compensation
from testing.saga_states import compensating, make_catalog, place, reply

pytestmark = pytest.mark.django_db

DEFINITION = "order_fulfilment"


@pytest.fixture
def catalog():
    return make_catalog()


def _counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _past_deadline(saga: SagaInstance) -> None:
    # Every command was handed to the broker: none waits in the outbox.
    OutboxMessage.objects.filter(published_at__isnull=True).update(published_at=timezone.now())
    SagaInstance.objects.filter(pk=saga.pk).update(step_deadline=timezone.now() - timedelta(seconds=1))


def test_a_saga_flagged_at_its_deadline_is_not_flagged_again_by_its_last_attempts_failure(catalog):
    stuck_before = _counter("backoffice_sagas_stuck_total", step="charge_payment")
    sagas = [place() for _ in range(5)]
    for saga in sagas:
        _past_deadline(saga)
    assert saga_sweep()["stuck"] == 5  # no reply before the deadline: the attempt still runs
    first_flags = {saga.pk: SagaInstance.objects.get(pk=saga.pk).stuck_since for saga in sagas}

    for saga in sagas:
        reply(saga, Outcome.TECHNICAL_FAILURE, error="GatewayUnavailable: gateway answered 503")

    for saga in sagas:
        saga.refresh_from_db()
        assert saga.stuck and saga.state == SagaState.RUNNING
        assert saga.stuck_since == first_flags[saga.pk]
        assert SagaEvent.objects.filter(saga=saga, kind="stuck").count() == 1
    assert _counter("backoffice_sagas_stuck_total", step="charge_payment") - stuck_before == 5


def test_a_saga_whose_compensation_fails_is_failed_and_no_longer_stuck(catalog):
    saga = compensating()
    _past_deadline(saga)
    assert saga_sweep()["stuck"] == 1  # the refund went unanswered: flagged, still resent
    saga.refresh_from_db()
    assert saga.stuck

    reply(saga, Outcome.TECHNICAL_FAILURE, error="GatewayUnavailable: refunds are down")

    saga.refresh_from_db()
    assert saga.state == SagaState.FAILED
    assert (saga.stuck, saga.stuck_reason, saga.stuck_since) == (False, "", None)
    assert SagaInstance.objects.filter(stuck=True).count() == 0


def test_a_failed_saga_compensated_after_a_repair_finishes_once(catalog):
    finished = {
        state: _counter("backoffice_sagas_finished_total", definition=DEFINITION, state=state) for state in SagaState
    }
    saga = compensating()
    for _ in range(10):
        reply(saga, Outcome.TECHNICAL_FAILURE, error="GatewayUnavailable: refunds are down")
        if saga.state == SagaState.FAILED:
            break
    assert saga.state == SagaState.FAILED

    with transaction.atomic():  # an operator's repair, as the console runs it
        locked = lock_saga(saga.pk)
        transition_retry_compensation(locked, definition_for(locked.definition_name, locked.definition_version))
        saga_save(locked)
    reply(saga)  # refunded
    reply(saga)  # the order is cancelled
    assert saga.state == SagaState.COMPENSATED

    moved = {
        state: _counter("backoffice_sagas_finished_total", definition=DEFINITION, state=state) - finished[state]
        for state in SagaState
    }
    assert sum(moved.values()) == 1
    assert moved[SagaState.FAILED] == 1  # counted when it first ended, not again when repaired


def test_replaying_the_dead_letter_of_the_current_attempt_resumes_the_stuck_saga(catalog):
    from django.conf import settings

    from common.faults import faults_clear, faults_set
    from outbox.consumer import deliver
    from outbox.models import DeadLetter
    from outbox.services import dead_letter_replay
    from shipping.models import CarrierShipment
    from testing.messages import sent_envelope
    from testing.saga_states import settle

    saga = place()
    while saga.current_step != "create_shipment":  # charged, stock reserved
        message = OutboxMessage.objects.filter(published_at__isnull=True).order_by("id").first()
        OutboxMessage.objects.filter(pk=message.pk).update(published_at=timezone.now())
        deliver(sent_envelope(message))
        saga.refresh_from_db()

    dead_letters = []
    faults_set(carrier_transient=1.0)  # the carrier is down: every attempt gives up as a dead letter
    try:
        while not saga.stuck:
            command = OutboxMessage.objects.get(published_at__isnull=True, type="create_shipment")
            OutboxMessage.objects.filter(pk=command.pk).update(published_at=timezone.now())
            assert deliver(sent_envelope(command), attempt=settings.OUTBOX_MAX_ATTEMPTS - 1) == "dead_letter"
            dead_letters.append(DeadLetter.objects.get(message_id=str(command.message_id)))
            told = OutboxMessage.objects.get(published_at__isnull=True, type="saga_reply")
            OutboxMessage.objects.filter(pk=told.pk).update(published_at=timezone.now())
            deliver(sent_envelope(told))  # the orchestrator hears of the dead letter
            saga.refresh_from_db()
    finally:
        faults_clear()
    assert (saga.current_step, saga.attempt) == ("create_shipment", len(dead_letters))

    dead_letter_replay(dead_letter=dead_letters[-1])  # the carrier is back
    settle()

    saga.refresh_from_db()
    assert (saga.state, saga.stuck) == (SagaState.COMPLETED, False)
    assert CarrierShipment.objects.filter(idempotency_key__contains=str(saga.pk)).count() == 1
    assert not SagaEvent.objects.filter(saga=saga, kind="reply_ignored").exists()


def test_an_ignored_reply_to_the_attempt_the_saga_is_at_says_that_attempt_was_answered(catalog):
    saga = place()
    _past_deadline(saga)
    reply(saga, Outcome.TECHNICAL_FAILURE, error="GatewayUnavailable: gateway answered 503")  # flagged stuck
    assert saga.stuck and saga.attempt == 1

    reply(saga, Outcome.TECHNICAL_FAILURE, attempt=1, error="GatewayUnavailable: again")  # another copy's answer

    (ignored,) = SagaEvent.objects.filter(saga=saga, kind="reply_ignored")
    assert ignored.detail == (
        "technical_failure for charge_payment/forward attempt 1: that attempt was answered already"
        " (technical_failure); the saga is running at charge_payment/forward attempt 1"
    )
