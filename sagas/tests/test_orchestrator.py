"""The orchestrator's decisions, with messages handled synchronously in the test process
(the delivery machinery is proven against a real worker elsewhere)."""

import dataclasses
import uuid
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from inventory.services import product_upsert, stock_receive
from orders.models import Order
from orders.saga import ORDER_SAGA, OrderSagaData, confirm_order
from orders.services import Customer, LineInput, order_place
from outbox.consumer import deliver
from outbox.models import InboxMessage, OutboxMessage
from outbox.publishing import publish
from sagas.definition import Command, SagaDefinition, Step, StepKind, register_definition, unregister_definition
from sagas.messages import ORCHESTRATOR, REPLY_TYPE
from sagas.models import Outcome, SagaEvent, SagaInstance, SagaState, SagaStep
from sagas.orchestrator import saga_sweep
from testing.messages import sent_envelope
from testing.pump import pump

ADDRESS = {"line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE"}

pytestmark = pytest.mark.django_db


@pytest.fixture
def catalog():
    product = product_upsert(sku="SKU-A", name="Grinder", price_amount=4500)
    stock_receive(product=product, quantity=10)
    return product


def _place() -> Order:
    return order_place(
        customer=Customer(email="ann@example.com", name="Ann"),
        lines=[LineInput(sku="SKU-A", quantity=1)],
        payment_token="tok_visa",
        shipping_address=ADDRESS,
    ).order


def _reply(saga: SagaInstance, *, step: str, attempt: int, outcome: str = "success", phase: str = "forward") -> None:
    with transaction.atomic():
        message = publish(
            type=REPLY_TYPE,
            destination=ORCHESTRATOR,
            aggregate="saga",
            aggregate_id=saga.pk,
            correlation_id=str(saga.pk),
            payload={"saga_id": str(saga.pk), "step": step, "phase": phase, "attempt": attempt, "outcome": outcome},
        )
    OutboxMessage.objects.filter(pk=message.pk).update(published_at=timezone.now())
    deliver(sent_envelope(message))


def test_stale_duplicate_and_reordered_replies_are_recorded_and_ignored(catalog):
    order = _place()
    saga = SagaInstance.objects.get(pk=order.saga_id)
    _reply(saga, step="reserve_stock", attempt=1)  # reordered: answers a step not yet sent
    _reply(saga, step="charge_payment", attempt=7)  # an attempt that was never made
    saga.refresh_from_db()
    assert (saga.current_step, saga.state) == ("charge_payment", SagaState.RUNNING)
    assert SagaEvent.objects.filter(saga=saga, kind="reply_ignored").count() == 2

    pump()
    saga.refresh_from_db()
    assert saga.state == SagaState.COMPLETED
    _reply(saga, step="confirm_order", attempt=1)  # a duplicate after the end
    saga.refresh_from_db()
    assert saga.state == SagaState.COMPLETED
    assert SagaEvent.objects.filter(saga=saga, kind="reply_ignored").count() == 3
    assert SagaStep.objects.filter(saga=saga, outcome=Outcome.SUCCESS).count() == 4


def test_a_saga_finishes_on_the_definition_version_it_started_with(catalog):
    order = _place()  # starts on version 1
    saga = SagaInstance.objects.get(pk=order.saga_id)
    assert saga.definition_version == ORDER_SAGA.version

    def notify_warehouse(data: OrderSagaData) -> Command:
        return Command("orders", "notify_warehouse", {"order_id": data.order_id})

    steps = list(ORDER_SAGA.steps)
    steps.insert(-1, Step("notify_warehouse", action=notify_warehouse))
    version_2 = register_definition(dataclasses.replace(ORDER_SAGA, version=ORDER_SAGA.version + 1, steps=steps))
    try:
        pump()
        saga.refresh_from_db()
        assert saga.state == SagaState.COMPLETED
        assert "notify_warehouse" not in saga.completed_steps
        assert not SagaStep.objects.filter(saga=saga, step="notify_warehouse").exists()
        newer = SagaInstance.objects.get(pk=_place().saga_id)
        assert newer.definition_version == version_2.version
    finally:
        unregister_definition(version_2.name, version_2.version)


def test_definition_rejects_retriable_step_before_compensatable():
    with pytest.raises(ValueError):
        SagaDefinition(
            name="bad",
            version=1,
            data_class=OrderSagaData,
            steps=[Step("a", action=confirm_order, kind=StepKind.RETRIABLE), Step("b", action=confirm_order)],
        )


def test_sweeper_resends_an_unanswered_command_then_flags_stuck_past_the_deadline(catalog, settings):
    order = _place()
    saga = SagaInstance.objects.get(pk=order.saga_id)
    OutboxMessage.objects.update(published_at=timezone.now())  # the command was lost by the broker
    SagaInstance.objects.filter(pk=saga.pk).update(last_sent_at=timezone.now() - timedelta(minutes=10))
    assert saga_sweep()["resent"] == 1
    saga.refresh_from_db()
    assert saga.attempt == 2
    assert SagaStep.objects.get(saga=saga, attempt=1).outcome == Outcome.SUPERSEDED
    assert OutboxMessage.objects.filter(published_at__isnull=True, type="charge_payment").count() == 1

    SagaInstance.objects.filter(pk=saga.pk).update(step_deadline=timezone.now() - timedelta(seconds=1))
    assert saga_sweep()["stuck"] == 1
    saga.refresh_from_db()
    assert saga.stuck and "deadline" in saga.stuck_reason
    assert saga.state == SagaState.RUNNING
    assert saga_sweep() == {"resent": 0, "stuck": 0, "failed": 0}  # an operator's turn now

    pump()  # the resent command is answered after all: the saga moves on and is no longer stuck
    saga.refresh_from_db()
    assert saga.state == SagaState.COMPLETED and not saga.stuck


def test_sweeper_does_not_resend_a_command_still_waiting_in_the_outbox(catalog):
    order = _place()
    saga = SagaInstance.objects.get(pk=order.saga_id)
    SagaInstance.objects.filter(pk=saga.pk).update(last_sent_at=timezone.now() - timedelta(minutes=10))
    # The relay has not sent it yet (a backlog, a relay that was down): it is late, not lost.
    assert saga_sweep()["resent"] == 0
    assert OutboxMessage.objects.filter(type="charge_payment").count() == 1
    saga.refresh_from_db()
    assert saga.attempt == 1 and not saga.stuck

    OutboxMessage.objects.update(published_at=timezone.now())  # sent, then lost by the broker
    assert saga_sweep()["resent"] == 1
    assert OutboxMessage.objects.filter(type="charge_payment").count() == 2


def test_compensation_unanswered_past_its_deadline_is_flagged_and_resent_until_it_is_done(catalog):
    order = order_place(
        customer=Customer(email="ann@example.com", name="Ann"),
        lines=[LineInput(sku="SKU-A", quantity=50)],
        payment_token="tok_visa",
        shipping_address=ADDRESS,
    ).order
    pump(skip={"refund_payment"})
    saga = SagaInstance.objects.get(pk=order.saga_id)
    assert (saga.state, saga.current_step) == (SagaState.COMPENSATING, "charge_payment")
    OutboxMessage.objects.update(published_at=timezone.now())  # the refund command sits behind a backlog
    SagaInstance.objects.filter(pk=saga.pk).update(step_deadline=timezone.now() - timedelta(seconds=1))

    assert saga_sweep() == {"resent": 0, "stuck": 1, "failed": 0}
    saga.refresh_from_db()
    assert saga.state == SagaState.COMPENSATING and saga.stuck  # an operator sees it; nothing is given up
    assert "refund" in saga.stuck_reason or "charge_payment" in saga.stuck_reason

    SagaInstance.objects.filter(pk=saga.pk).update(last_sent_at=timezone.now() - timedelta(minutes=10))
    assert saga_sweep()["resent"] == 1  # still resent while flagged
    pump()  # answered at last
    saga.refresh_from_db()
    assert saga.state == SagaState.COMPENSATED and not saga.stuck
    order.refresh_from_db()
    assert order.status == Order.Status.CANCELLED


@pytest.mark.parametrize("saga_id", [str(uuid.uuid4()), "not-a-uuid"])
def test_a_reply_for_an_unknown_or_malformed_saga_is_recorded_and_changes_nothing(catalog, saga_id):
    order = _place()
    saga = SagaInstance.objects.get(pk=order.saga_id)
    before = (saga.state, saga.current_step, saga.attempt, saga.updated_at)
    with transaction.atomic():
        message = publish(
            type=REPLY_TYPE,
            destination=ORCHESTRATOR,
            aggregate="saga",
            aggregate_id=saga_id,
            payload={
                "saga_id": saga_id,
                "step": "charge_payment",
                "phase": "forward",
                "attempt": 1,
                "outcome": "success",
            },
        )
    OutboxMessage.objects.filter(pk=message.pk).update(published_at=timezone.now())

    assert deliver(sent_envelope(message)) == "handled"

    saga.refresh_from_db()
    assert (saga.state, saga.current_step, saga.attempt, saga.updated_at) == before
    assert not SagaStep.objects.filter(saga=saga, outcome=Outcome.SUCCESS).exists()
    assert InboxMessage.objects.filter(message_id=message.message_id).exists()


def test_an_earlier_attempts_decision_moves_the_saga_on_without_waiting_for_the_resent_copy(catalog):
    from testing.saga_states import place, reply

    saga = place()
    OutboxMessage.objects.update(published_at=timezone.now())  # handed to the broker, and slow
    SagaInstance.objects.filter(pk=saga.pk).update(last_sent_at=timezone.now() - timedelta(hours=1))
    assert saga_sweep()["resent"] == 1
    saga.refresh_from_db()
    assert saga.attempt == 2

    reply(saga, Outcome.TECHNICAL_FAILURE, attempt=1)  # an earlier attempt's failure proves nothing
    assert (saga.current_step, saga.attempt) == ("charge_payment", 2)

    reply(saga, Outcome.SUCCESS, attempt=1)  # the key's decision, whichever copy brings it
    assert (saga.current_step, saga.attempt) == ("reserve_stock", 1)
    attempts = dict(SagaStep.objects.filter(saga=saga, step="charge_payment").values_list("attempt", "outcome"))
    assert attempts == {1: Outcome.SUCCESS, 2: Outcome.SUPERSEDED}

    reply(saga, Outcome.SUCCESS, attempt=2)  # the resent copy's answer, late: recorded, ignored
    saga.refresh_from_db()
    assert (saga.current_step, saga.attempt) == ("reserve_stock", 1)
