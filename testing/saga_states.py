"""Sagas driven into each state by replies, as the participants would answer, for the tests
of the operators' actions and console (handled in the test process, no worker)."""

from django.db import transaction
from django.utils import timezone

from inventory.services import product_upsert, stock_receive
from orders.services import Customer, LineInput, order_place
from outbox.consumer import RetryLater, deliver
from outbox.models import OutboxMessage
from outbox.publishing import publish
from outbox.stream import STREAM_DESTINATION
from sagas.messages import ORCHESTRATOR, REPLY_TYPE
from sagas.models import Outcome, SagaInstance, SagaState
from testing.messages import sent_envelope

ADDRESS = {"line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE"}


def make_catalog():
    product = product_upsert(sku="SKU-A", name="Grinder", price_amount=4500)
    stock_receive(product=product, quantity=10)
    return product


def place(quantity: int = 1) -> SagaInstance:
    order = order_place(
        customer=Customer(email="ann@example.com", name="Ann"),
        lines=[LineInput(sku="SKU-A", quantity=quantity)],
        payment_token="tok_visa",
        shipping_address=ADDRESS,
    ).order
    return SagaInstance.objects.get(pk=order.saga_id)


def reply(saga: SagaInstance, outcome: str = Outcome.SUCCESS, *, attempt: int | None = None, error: str = "") -> None:
    """Answer the attempt the saga waits for (or another one), through the inbox."""
    saga.refresh_from_db()
    payload = {
        "saga_id": str(saga.pk),
        "step": saga.current_step,
        "phase": saga.phase,
        "attempt": saga.attempt if attempt is None else attempt,
        "outcome": outcome,
        "error": error,
    }
    with transaction.atomic():
        message = publish(
            type=REPLY_TYPE,
            destination=ORCHESTRATOR,
            aggregate="saga",
            aggregate_id=saga.pk,
            correlation_id=str(saga.pk),
            payload=payload,
        )
    OutboxMessage.objects.filter(pk=message.pk).update(published_at=timezone.now())
    deliver(sent_envelope(message))
    saga.refresh_from_db()


def fail_until_flagged(saga: SagaInstance) -> SagaInstance:
    for _ in range(10):
        reply(saga, Outcome.TECHNICAL_FAILURE, error="GatewayUnavailable: gateway answered 503")
        if saga.stuck or saga.state == SagaState.FAILED:
            # Every command sent so far was delivered (and dead-lettered): none is left to relay.
            OutboxMessage.objects.filter(published_at__isnull=True).update(published_at=timezone.now())
            return saga
    raise AssertionError("the saga was never flagged")


def settle(*, max_messages: int = 100) -> None:
    """Deliver every unpublished message to its real handler, in order, as relay and worker
    would (retrying a transient failure at once)."""
    for _ in range(max_messages):
        unpublished = OutboxMessage.objects.filter(published_at__isnull=True).exclude(destination=STREAM_DESTINATION)
        message = unpublished.order_by("id").first()
        if message is None:
            return
        OutboxMessage.objects.filter(pk=message.pk).update(published_at=timezone.now())
        for attempt in range(5):
            try:
                deliver(sent_envelope(message), attempt=attempt)
                break
            except RetryLater:
                continue
    raise AssertionError("messages kept coming")


def running() -> SagaInstance:
    return place()


def stuck() -> SagaInstance:
    saga = fail_until_flagged(place())
    assert saga.stuck and saga.state == SagaState.RUNNING and saga.current_step == "charge_payment"
    return saga


def stuck_past_pivot() -> SagaInstance:
    saga = place()
    for _ in ("charge_payment", "reserve_stock", "create_shipment"):
        reply(saga)
    saga = fail_until_flagged(saga)
    assert saga.stuck and saga.current_step == "confirm_order"
    return saga


def compensating() -> SagaInstance:
    saga = place()
    reply(saga)  # charged
    reply(saga, Outcome.BUSINESS_FAILURE, error="out of stock")
    assert (saga.state, saga.current_step) == (SagaState.COMPENSATING, "charge_payment")
    return saga


def failed() -> SagaInstance:
    saga = fail_until_flagged(compensating())
    assert (saga.state, saga.current_step) == (SagaState.FAILED, "charge_payment")
    return saga


def completed() -> SagaInstance:
    saga = place()
    while saga.state == SagaState.RUNNING:
        reply(saga)
    assert saga.state == SagaState.COMPLETED
    return saga


def compensated() -> SagaInstance:
    saga = place()
    reply(saga, Outcome.BUSINESS_FAILURE, error="card declined")
    reply(saga)  # the order is cancelled
    assert saga.state == SagaState.COMPENSATED
    return saga


STATES = {
    "running": running,
    "stuck": stuck,
    "stuck_past_pivot": stuck_past_pivot,
    "compensating": compensating,
    "failed": failed,
    "completed": completed,
    "compensated": compensated,
}
