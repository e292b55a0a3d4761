"""Writes of the payments context. Gateway calls happen before, outside the transaction;
these functions record their results."""

from django.db.models.functions import Now

from payments.gateway import GatewayResponse
from payments.models import LedgerEntry, Payment
from sagas.exceptions import BusinessFailure


def provider_key(step_key: str) -> str:
    """The gateway's idempotency key, derived from the step's, so the lineage can be followed."""
    return f"pay:{step_key}"


def payment_record_charge(*, order_id: int, step_key: str, response: GatewayResponse) -> Payment:
    """Record a successful charge once; a declined one is a business failure."""
    existing = Payment.objects.filter(idempotency_key=step_key).first()
    if existing is not None:
        if existing.status == Payment.Status.VOIDED:
            raise BusinessFailure("the payment was voided by a compensation before it was charged")
        return existing
    if not response.is_success:
        raise BusinessFailure(f"payment declined: {response.error}")
    payment = Payment.objects.create(
        order_id=order_id,
        idempotency_key=step_key,
        provider_charge_id=response.transaction_id,
        amount=response.amount,
        currency=response.currency,
        status=Payment.Status.CHARGED,
    )
    LedgerEntry.objects.create(
        payment=payment,
        order_id=order_id,
        kind=LedgerEntry.Kind.CHARGE,
        amount=response.amount,
        currency=response.currency,
        idempotency_key=provider_key(step_key),
        provider_reference=response.transaction_id,
    )
    return payment


def payment_record_refund(
    *,
    order_id: int,
    charge_key: str,
    refund_key: str,
    charge: GatewayResponse | None,
    refund: GatewayResponse | None,
) -> Payment:
    """Record a refund as a new ledger entry. With no charge at the gateway, leave a voided
    payment under the charge key so that a late charge command is refused."""
    payment = Payment.objects.select_for_update().filter(idempotency_key=charge_key).first()
    if payment is None:
        if charge is None or not charge.is_success:
            return Payment.objects.create(
                order_id=order_id,
                idempotency_key=charge_key,
                amount=charge.amount if charge else 0,
                currency=charge.currency if charge else "XXX",
                status=Payment.Status.VOIDED,
            )
        # The gateway charged but our record never committed (e.g. the step timed out for good):
        # record the charge now, so the ledger agrees with the gateway, then the refund.
        payment = payment_record_charge(order_id=order_id, step_key=charge_key, response=charge)
    if payment.status != Payment.Status.CHARGED or refund is None:
        return payment
    LedgerEntry.objects.create(
        payment=payment,
        order_id=order_id,
        kind=LedgerEntry.Kind.REFUND,
        amount=refund.amount,
        currency=refund.currency,
        idempotency_key=provider_key(refund_key),
        provider_reference=refund.transaction_id,
    )
    Payment.objects.filter(pk=payment.pk).update(status=Payment.Status.REFUNDED, updated_at=Now())
    payment.status = Payment.Status.REFUNDED
    return payment
