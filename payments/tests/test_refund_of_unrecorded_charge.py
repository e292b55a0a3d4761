"""A charge the gateway made but our books never recorded: the forward handler called the
gateway, then crashed before its commit, on every delivery, until the saga was stuck and an
operator compensated it. The refund must find that charge at the gateway and give the money
back; voiding the payment would tell the customer of a refund that never happened."""

import pytest
from django.contrib.auth import get_user_model

from common.faults import faults_clear, faults_set
from console.operations import saga_compensate
from orders.models import Order
from payments.models import GatewayCharge, LedgerEntry, Payment
from sagas.models import Outcome, Phase, SagaInstance, SagaState, SagaStep
from testing.saga_states import make_catalog, place, settle

pytestmark = pytest.mark.django_db

PRICE = 4500


@pytest.fixture
def catalog():
    return make_catalog()


@pytest.fixture
def no_faults_after():
    yield
    faults_clear()


def _stuck_with_an_unrecorded_charge(quantity: int) -> SagaInstance:
    """Every delivery of the charge command reaches the gateway, which charges and then times
    out: the handler never commits, each attempt dead-letters, and the saga is flagged stuck."""
    saga = place(quantity=quantity)
    faults_set(gateway_timeout_after_charge=1.0)
    settle()
    faults_clear()
    saga.refresh_from_db()
    assert (saga.state, saga.current_step, saga.stuck) == (SagaState.RUNNING, "charge_payment", True)
    return saga


def test_compensating_a_charge_the_gateway_made_but_we_never_recorded_refunds_it_at_the_gateway(
    catalog, no_faults_after
):
    saga = _stuck_with_an_unrecorded_charge(quantity=2)
    charge = GatewayCharge.objects.get(kind=GatewayCharge.Kind.CHARGE)
    assert (charge.succeeded, charge.amount) == (True, 2 * PRICE)  # the customer's money moved
    order = Order.objects.get(saga_id=saga.pk)
    assert not Payment.objects.filter(order_id=order.pk).exists()  # our books know nothing of it
    assert not LedgerEntry.objects.filter(order_id=order.pk).exists()

    operator = get_user_model().objects.create_user("olga", is_staff=True)
    saga_compensate(saga_id=saga.pk, actor=operator, reason="gateway timeouts; cancel the order")
    settle()

    # The gateway gave the charge back, once and in full.
    refunds = GatewayCharge.objects.filter(kind=GatewayCharge.Kind.REFUND)
    assert [(r.charge_transaction_id, r.amount, r.succeeded) for r in refunds] == [
        (charge.transaction_id, 2 * PRICE, True)
    ]
    # Our ledger now agrees with the gateway: the charge it missed, and its refund; net zero.
    entries = LedgerEntry.objects.filter(order_id=order.pk)
    assert sorted((e.kind, e.amount, e.provider_reference) for e in entries) == [
        ("charge", 2 * PRICE, charge.transaction_id),
        ("refund", 2 * PRICE, refunds.get().transaction_id),
    ]
    payment = Payment.objects.get(order_id=order.pk)
    assert payment.status == Payment.Status.REFUNDED, "a voided payment would mean no money ever moved"
    assert payment.provider_charge_id == charge.transaction_id

    # The orchestrator was told the refund succeeded only because it did, and the order is cancelled.
    refund_replies = SagaStep.objects.filter(
        saga=saga, step="charge_payment", phase=Phase.COMPENSATION, reply__isnull=False
    )
    assert [step.outcome for step in refund_replies] == [Outcome.SUCCESS]
    saga.refresh_from_db()
    order.refresh_from_db()
    assert saga.state == SagaState.COMPENSATED
    assert order.status == Order.Status.CANCELLED
