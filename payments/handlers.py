"""Payments' saga commands: charge, and its compensation, refund.

The gateway is called in ``prepare``, outside any transaction, with a key derived from the
step; a crash after the call and before the commit is repaired by the redelivery calling
again with the same key and getting the same charge.
"""

from dataclasses import dataclass
from typing import Any

from opentelemetry.trace import SpanKind

from config import tracing
from outbox.messages import Message
from payments.gateway import GatewayResponse, get_gateway
from payments.models import Payment
from payments.services import payment_record_charge, payment_record_refund, provider_key
from sagas.messages import command_meta
from sagas.participant import saga_participant

CONSUMER = "payments"


@dataclass(frozen=True)
class ChargePayment:
    order_id: int
    amount: int
    currency: str
    token: str


@dataclass(frozen=True)
class RefundPayment:
    order_id: int
    charge_key: str


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


def charge(message: Message, response: GatewayResponse | None) -> dict[str, Any]:
    command = message.parse(ChargePayment)
    key = command_meta(message).idempotency_key
    if response is None:
        payment = Payment.objects.get(idempotency_key=key)
        response = GatewayResponse(True, "charge", payment.amount, payment.currency, payment.provider_charge_id)
    payment = payment_record_charge(order_id=command.order_id, step_key=key, response=response)
    return {"payment_id": payment.pk}


@dataclass(frozen=True)
class RefundCall:
    charge: GatewayResponse | None
    refund: GatewayResponse | None


def refund_call(message: Message) -> RefundCall:
    command = message.parse(RefundPayment)
    gateway = get_gateway()
    key = provider_key(command_meta(message).idempotency_key)
    with tracing.span("gateway refund", kind=SpanKind.CLIENT, attributes={"backoffice.provider_key": key}):
        charged = gateway.retrieve_charge(idempotency_key=provider_key(command.charge_key))
        if charged is None or not charged.is_success:
            return RefundCall(charge=charged, refund=None)
        refund = gateway.refund(
            idempotency_key=key,
            charge_transaction_id=charged.transaction_id,
            amount=charged.amount,
            currency=charged.currency,
        )
    return RefundCall(charge=charged, refund=refund)


def refund(message: Message, call: RefundCall) -> dict[str, Any]:
    command = message.parse(RefundPayment)
    payment = payment_record_refund(
        order_id=command.order_id,
        charge_key=command.charge_key,
        refund_key=command_meta(message).idempotency_key,
        charge=call.charge,
        refund=call.refund,
    )
    return {"refunded_payment_status": payment.status}


saga_participant(CONSUMER, "charge_payment", handle=charge, prepare=charge_call)
saga_participant(CONSUMER, "refund_payment", handle=refund, prepare=refund_call)
