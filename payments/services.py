"""Writes of the payments context. Gateway calls happen before, outside the transaction;
these functions record their results."""

from django.db.models.functions import Now

from outbox.events import occurred, publish_event
from payments.contracts import PaymentCapturedV1, PaymentRefundedV1
from payments.exceptions import PaymentDeclined, PaymentRefused
from payments.gateway import GatewayResponse
from payments.models import LedgerEntry, Payment


def provider_key(step_key: str) -> str:
    """The gateway's idempotency key, derived from the step's, so the lineage can be followed."""
    return f"pay:{step_key}"


def payment_record_charge(
    *, order_id: int, step_key: str, response: GatewayResponse, saga_id: str | None = None, step: str = ""
) -> Payment:
    """Record a successful charge once; a declined one is a business failure. ``saga_id`` and
    ``step``: the saga step that charged (as on every row a step makes here)."""
    existing = Payment.objects.filter(idempotency_key=step_key).first()
    if existing is not None:
        if existing.status == Payment.Status.VOIDED:
            raise PaymentRefused("the payment was voided by a compensation before it was charged")
        return existing
    if not response.is_success:
        raise PaymentDeclined(f"payment declined: {response.error}")
    payment = Payment.objects.create(
        order_id=order_id,
        idempotency_key=step_key,
        saga_id=saga_id,
        step=step,
        provider_charge_id=response.transaction_id,
        amount=response.amount,
        currency=response.currency,
        status=Payment.Status.CHARGED,
    )
    _book(
        payment,
        LedgerEntry.Kind.CHARGE,
        amount=response.amount,
        currency=response.currency,
        key=provider_key(step_key),
        reference=response.transaction_id,
    )
    return payment


def _book(payment: Payment, kind: str, *, amount: int, currency: str, key: str, reference: str) -> LedgerEntry:
    """One append-only ledger entry of ``payment``: what moved, under which key, with the
    provider's id of the movement as its reference (what the auditor matches on). Every entry
    is announced on the event stream: money moves nowhere else."""
    entry = LedgerEntry.objects.create(
        payment=payment,
        order_id=payment.order_id,
        kind=kind,
        amount=amount,
        currency=currency,
        idempotency_key=key,
        provider_reference=reference,
    )
    event = PaymentCapturedV1 if kind == LedgerEntry.Kind.CHARGE else PaymentRefundedV1
    publish_event(
        event(
            order_id=payment.order_id,
            saga_id=str(payment.saga_id or ""),
            payment_id=payment.pk,
            amount=amount,
            currency=currency,
            reference=reference,
            occurred_at=occurred(entry.created_at),
        ),
        aggregate="order",
        aggregate_id=payment.order_id,
    )
    return entry


def late_charge_key(step_key: str, transaction_id: str) -> str:
    """The key under which a charge that landed late (or twice, by hand) is refunded and booked:
    derived from the step's key and the charge, so each stray charge has its own."""
    return f"{step_key}:late:{transaction_id}"


def payment_record_charge_by_hand(
    *,
    order_id: int,
    step_key: str,
    amount: int,
    currency: str,
    charge_id: str,
    saga_id: str | None = None,
    step: str = "",
) -> Payment:
    """Record a charge an operator made in the provider's console. Its id is the evidence a
    refund acts on later; without one, the charge cannot be refunded through the gateway, so
    the record is refused rather than kept as money nobody can find."""
    if not charge_id:
        raise PaymentRefused("give the provider's charge id (ch_...) as evidence of a charge made by hand")
    payment = Payment.objects.create(
        order_id=order_id,
        idempotency_key=step_key,
        saga_id=saga_id,
        step=step,
        provider_charge_id=charge_id,
        amount=amount,
        currency=currency,
        status=Payment.Status.CHARGED,
    )
    _book(
        payment,
        LedgerEntry.Kind.CHARGE,
        amount=amount,
        currency=currency,
        key=f"{provider_key(step_key)}:by-hand",
        reference=charge_id,
    )
    return payment


def payment_record_refund(
    *,
    order_id: int,
    charge_key: str,
    refund_key: str,
    charge: GatewayResponse | None,
    refund: GatewayResponse | None,
    looked_up_charge_id: str = "",
    saga_id: str | None = None,
    step: str = "",
) -> Payment:
    """Record a refund as a new ledger entry. With no charge at the gateway, leave a voided
    payment under the charge key so that a late charge command is refused.

    Never reports a refund that did not happen: a charge in our books with no refund made is
    either one recorded while the refund was being made (delivered again, the refund finds it)
    or one the gateway does not know (``looked_up_charge_id`` was asked for and not found), which
    only an operator can undo."""
    payment = Payment.objects.select_for_update().filter(idempotency_key=charge_key).first()
    if payment is None:
        if charge is None or not charge.is_success:
            return Payment.objects.create(
                order_id=order_id,
                idempotency_key=charge_key,
                saga_id=saga_id,
                step=step,
                amount=charge.amount if charge else 0,
                currency=charge.currency if charge else "XXX",
                status=Payment.Status.VOIDED,
            )
        # The gateway charged but our record never committed (e.g. the step timed out for good):
        # record the charge now, so the ledger agrees with the gateway, then the refund.
        payment = payment_record_charge(
            order_id=order_id, step_key=charge_key, response=charge, saga_id=saga_id, step=step
        )
    if payment.status != Payment.Status.CHARGED:
        return payment
    if refund is None:
        if looked_up_charge_id and looked_up_charge_id == payment.provider_charge_id:
            raise PaymentRefused(
                f"charge {payment.provider_charge_id} is not known to the gateway, so it cannot be refunded"
                " through it: refund it by hand"
            )
        raise RuntimeError("the charge was recorded while it was being refunded; refunding again")
    _book(
        payment,
        LedgerEntry.Kind.REFUND,
        amount=refund.amount,
        currency=refund.currency,
        key=provider_key(refund_key),
        reference=refund.transaction_id,
    )
    Payment.objects.filter(pk=payment.pk).update(status=Payment.Status.REFUNDED, updated_at=Now())
    payment.status = Payment.Status.REFUNDED
    return payment


def payment_record_refund_by_hand(
    *, order_id: int, charge_key: str, refund_key: str, refund_id: str, saga_id: str | None = None, step: str = ""
) -> Payment:
    """Record a refund an operator made in the provider's console, as the ledger entry the
    saga's refund would have written (the provider's refund id as its reference). A charge in
    our books without the id of its refund is refused: "nothing was charged" or "refunded" on
    the operator's word alone would leave a ledger nobody can check against the gateway."""
    payment = Payment.objects.select_for_update().filter(idempotency_key=charge_key).first()
    if payment is not None and payment.status == Payment.Status.CHARGED and not refund_id:
        raise PaymentRefused(
            f"our books hold charge {payment.provider_charge_id or '(no id)'} of {payment.amount} {payment.currency}:"
            " give the provider's refund id (re_...) as evidence of its refund by hand"
        )
    if payment is None:
        return Payment.objects.create(
            order_id=order_id,
            idempotency_key=charge_key,
            saga_id=saga_id,
            step=step,
            amount=0,
            currency="XXX",
            status=Payment.Status.VOIDED,
        )
    if payment.status != Payment.Status.CHARGED:
        return payment
    _book(
        payment,
        LedgerEntry.Kind.REFUND,
        amount=payment.amount,
        currency=payment.currency,
        key=f"{provider_key(refund_key)}:by-hand",
        reference=refund_id,
    )
    Payment.objects.filter(pk=payment.pk).update(status=Payment.Status.REFUNDED, updated_at=Now())
    payment.status = Payment.Status.REFUNDED
    return payment


def payment_record_late_charge_refund(
    *,
    order_id: int,
    charge_key: str,
    charge: GatewayResponse | None,
    refund: GatewayResponse | None,
    saga_id: str | None = None,
    step: str = "",
) -> None:
    """Book a charge that landed after its step was compensated or done by hand, and its
    refund, so that the ledger says what the gateway did: net nothing."""
    if charge is None or not charge.is_success or refund is None:
        return
    payment = Payment.objects.select_for_update().filter(idempotency_key=charge_key).first()
    if payment is not None and payment.provider_charge_id == charge.transaction_id:
        return  # the compensation found this charge and refunded it
    late_key = late_charge_key(charge_key, charge.transaction_id)
    if payment is not None and payment.status == Payment.Status.VOIDED and not payment.provider_charge_id:
        # The compensation's tombstone becomes the record of the charge it could not see.
        Payment.objects.filter(pk=payment.pk).update(
            provider_charge_id=charge.transaction_id,
            amount=charge.amount,
            currency=charge.currency,
            status=Payment.Status.REFUNDED,
            updated_at=Now(),
        )
        charge_entry_key = provider_key(charge_key)
    else:
        # The step was done by hand with another charge: this one is a payment of its own.
        payment, created = Payment.objects.get_or_create(
            idempotency_key=late_key,
            defaults={
                "order_id": order_id,
                "saga_id": saga_id,
                "step": step,
                "provider_charge_id": charge.transaction_id,
                "amount": charge.amount,
                "currency": charge.currency,
                "status": Payment.Status.REFUNDED,
            },
        )
        if not created:
            return
        charge_entry_key = f"{provider_key(late_key)}:charge"
    _book(
        payment,
        LedgerEntry.Kind.CHARGE,
        amount=charge.amount,
        currency=charge.currency,
        key=charge_entry_key,
        reference=charge.transaction_id,
    )
    _book(
        payment,
        LedgerEntry.Kind.REFUND,
        amount=refund.amount,
        currency=refund.currency,
        key=provider_key(late_key),
        reference=refund.transaction_id,
    )
