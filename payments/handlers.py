"""Payments' saga commands: charge, and its compensation, refund.

The gateway is called in ``prepare``, outside any transaction, with a key derived from the
step; a crash after the call and before the commit is repaired by the redelivery calling
again with the same key and getting the same charge.
"""

import re
from dataclasses import dataclass

from opentelemetry.trace import SpanKind

from common import tracing
from outbox.consumer import register
from outbox.messages import Message
from outbox.publishing import publish
from payments.contracts import Charged, ChargePayment, Refunded, RefundLateCharge, RefundPayment
from payments.exceptions import PaymentRefused
from payments.gateway import ChargeAlreadyRefunded, GatewayResponse, get_gateway
from payments.models import Payment, StepOutcome
from payments.services import (
    late_charge_key,
    payment_record_charge,
    payment_record_charge_by_hand,
    payment_record_late_charge_refund,
    payment_record_refund,
    payment_record_refund_by_hand,
    provider_key,
)
from sagas.messages import command_meta
from sagas.outcomes import Decision, OutcomeBook, OutcomeRecord
from sagas.participant import saga_participant

BOOK = OutcomeBook(StepOutcome)
# The provider's ids, as an operator pastes them from its console into their evidence.
CHARGE_ID = re.compile(r"\bch_[A-Za-z0-9]+\b")
REFUND_ID = re.compile(r"\bre_[A-Za-z0-9]+\b")


def charge_call(message: Message) -> GatewayResponse | None:
    command = message.parse(ChargePayment)
    key = command_meta(message).idempotency_key
    if Payment.objects.filter(idempotency_key=key).exists():
        return None  # already recorded (or voided): no need to ask the gateway again
    gateway_key = provider_key(key)
    with tracing.span("gateway charge", kind=SpanKind.CLIENT, attributes={"backoffice.provider_key": gateway_key}):
        return get_gateway().charge(
            idempotency_key=gateway_key, amount=command.amount, currency=command.currency, token=command.token
        )


def charge(message: Message, response: GatewayResponse | None) -> Charged:
    command = message.parse(ChargePayment)
    key = command_meta(message).idempotency_key
    if response is None:
        payment = Payment.objects.get(idempotency_key=key)
        response = GatewayResponse(True, "charge", payment.amount, payment.currency, payment.provider_charge_id)
    meta = command_meta(message)
    payment = payment_record_charge(
        order_id=command.order_id, step_key=key, response=response, saga_id=meta.saga_id, step=meta.step
    )
    return Charged(payment_id=payment.pk)


def charge_by_hand(message: Message, evidence: str) -> Charged:
    command = message.parse(ChargePayment)
    found = CHARGE_ID.search(evidence)
    payment = payment_record_charge_by_hand(
        order_id=command.order_id,
        step_key=command_meta(message).idempotency_key,
        amount=command.amount,
        currency=command.currency,
        charge_id=found.group(0) if found else "",
        saga_id=command_meta(message).saga_id,
        step=command_meta(message).step,
    )
    return Charged(payment_id=payment.pk)


def charge_found(message: Message) -> GatewayResponse | None:
    """The gateway's charge under this step's key, if an earlier copy's call made one."""
    return get_gateway().retrieve_charge(idempotency_key=provider_key(command_meta(message).idempotency_key))


def charge_landed_late(message: Message, response: GatewayResponse | None, record: OutcomeRecord) -> None:
    """The gateway charged this copy after the step was compensated or done by hand: refund
    that charge, through a command of our own (the gateway is never called inside this
    transaction). Its handler finds out whether the compensation refunded it already."""
    if response is None or not response.is_success or record.outcome not in (Decision.COMPENSATED, Decision.MANUAL):
        return
    _refund_as_late(message, response.transaction_id)


def _refund_as_late(message: Message, transaction_id: str) -> None:
    """Publish the refund of a charge made under this step's key but not the one its books hold."""
    command = message.parse(ChargePayment)
    key = command_meta(message).idempotency_key
    publish(
        type=RefundLateCharge.channel.type,
        destination=RefundLateCharge.channel.destination,
        aggregate="payment",
        aggregate_id=key,
        payload=RefundLateCharge(
            order_id=command.order_id,
            charge_key=key,
            transaction_id=transaction_id,
            saga_id=command_meta(message).saga_id,
            step=command_meta(message).step,
        ),
    )


def charge_by_hand_lost(message: Message, evidence: str, record: OutcomeRecord) -> None:
    """The operator charged in the provider's console, and the step was decided first another
    way: charged by a copy in flight (the console's charge is the second one), compensated, or
    refused. Either way the console's charge is refunded as a late charge is (never the charge
    our books hold: the evidence may name the saga's own)."""
    found = CHARGE_ID.search(evidence)
    if found is None:
        return
    _refund_as_late(message, found.group(0))


@dataclass(frozen=True)
class RefundCall:
    charge: GatewayResponse | None
    refund: GatewayResponse | None
    # The charge id looked up at the gateway, when our books held one (else the saga's key).
    looked_up_charge_id: str = ""


def _refund_charge(*, charged: GatewayResponse | None, refund_key: str) -> RefundCall:
    """Refund a charge the gateway made, once: one that another key refunded already (an
    operator in the provider's console, a late-charge refund) is that refund."""
    if charged is None or not charged.is_success:
        return RefundCall(charge=charged, refund=None)
    with tracing.span("gateway refund", kind=SpanKind.CLIENT, attributes={"backoffice.provider_key": refund_key}):
        try:
            refund = get_gateway().refund(
                idempotency_key=refund_key,
                charge_transaction_id=charged.transaction_id,
                amount=charged.amount,
                currency=charged.currency,
            )
        except ChargeAlreadyRefunded as already:
            refund = already.refund
    return RefundCall(charge=charged, refund=refund)


def refund_call(message: Message) -> RefundCall:
    command = message.parse(RefundPayment)
    gateway = get_gateway()
    payment = Payment.objects.filter(idempotency_key=command.charge_key).first()
    looked_up = ""
    if payment is not None and payment.status == Payment.Status.CHARGED and payment.provider_charge_id:
        # The charge our books hold, whoever made it: the saga's own, or one made by hand.
        looked_up = payment.provider_charge_id
        charged = gateway.retrieve_charge_by_id(transaction_id=looked_up)
    else:
        charged = gateway.retrieve_charge(idempotency_key=provider_key(command.charge_key))
    call = _refund_charge(charged=charged, refund_key=provider_key(command_meta(message).idempotency_key))
    return RefundCall(charge=call.charge, refund=call.refund, looked_up_charge_id=looked_up)


def refund(message: Message, call: RefundCall) -> Refunded:
    command = message.parse(RefundPayment)
    payment = payment_record_refund(
        order_id=command.order_id,
        charge_key=command.charge_key,
        refund_key=command_meta(message).idempotency_key,
        charge=call.charge,
        refund=call.refund,
        looked_up_charge_id=call.looked_up_charge_id,
        saga_id=command_meta(message).saga_id,
        step=command_meta(message).step,
    )
    return Refunded(refunded_payment_status=payment.status, refunded_amount=payment.refunded_amount)


def refund_by_hand(message: Message, evidence: str) -> Refunded:
    command = message.parse(RefundPayment)
    found = REFUND_ID.search(evidence)
    payment = payment_record_refund_by_hand(
        order_id=command.order_id,
        charge_key=command.charge_key,
        refund_key=command_meta(message).idempotency_key,
        refund_id=found.group(0) if found else "",
        saga_id=command_meta(message).saga_id,
        step=command_meta(message).step,
    )
    return Refunded(refunded_payment_status=payment.status, refunded_amount=payment.refunded_amount)


def refund_late_call(message: Message) -> RefundCall:
    command = message.parse(RefundLateCharge)
    recorded = Payment.objects.filter(idempotency_key=command.charge_key).first()
    if recorded is not None and recorded.provider_charge_id == command.transaction_id:
        return RefundCall(charge=None, refund=None)  # our books hold this charge: never refund it from here
    charged = get_gateway().retrieve_charge_by_id(transaction_id=command.transaction_id)
    refund_key = provider_key(late_charge_key(command.charge_key, command.transaction_id))
    return _refund_charge(charged=charged, refund_key=refund_key)


def refund_late(message: Message, call: RefundCall) -> None:
    command = message.parse(RefundLateCharge)
    payment_record_late_charge_refund(
        order_id=command.order_id,
        charge_key=command.charge_key,
        charge=call.charge,
        refund=call.refund,
        saga_id=command.saga_id or None,
        step=command.step,
    )


saga_participant(
    ChargePayment.channel,
    handle=charge,
    prepare=charge_call,
    book=BOOK,
    manual=charge_by_hand,
    late_effect=charge_landed_late,
    find_effect=charge_found,
    lost_by_hand=charge_by_hand_lost,
    business_failures=(PaymentRefused,),
)
saga_participant(
    RefundPayment.channel,
    handle=refund,
    prepare=refund_call,
    book=BOOK,
    manual=refund_by_hand,
    business_failures=(PaymentRefused,),
)
register(*RefundLateCharge.channel, handle=refund_late, prepare=refund_late_call)
