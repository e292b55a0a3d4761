"""Reads of the payments context, for the storefront API, the dashboard and the auditor."""

from dataclasses import dataclass

from django.db.models import Sum

from payments.models import GatewayCharge, LedgerEntry, Payment
from payments.services import provider_key
from sagas.selectors import KeyRecord

NO_PAYMENT = "none"


@dataclass(frozen=True)
class PaymentSummary:
    """An order's payment as the ledger tells it. ``status`` is the payment's, or "none"
    while nothing was charged or voided yet."""

    status: str
    amount_charged: int
    amount_refunded: int


def payment_summary_of_order(*, order_id: int) -> PaymentSummary:
    # Amounts come from the append-only ledger, not from the payment row: the ledger is what
    # moved money, and a refund is an entry of its own.
    payment = Payment.objects.filter(order_id=order_id).order_by("-id").first()
    totals = dict(
        LedgerEntry.objects.filter(order_id=order_id)
        .values("kind")
        .annotate(total=Sum("amount"))
        .values_list("kind", "total")
    )
    return PaymentSummary(
        status=payment.status if payment is not None else NO_PAYMENT,
        amount_charged=totals.get(LedgerEntry.Kind.CHARGE, 0),
        amount_refunded=totals.get(LedgerEntry.Kind.REFUND, 0),
    )


def payments_of_order(*, order_id: int) -> list[Payment]:
    return list(Payment.objects.filter(order_id=order_id).order_by("id"))


def saga_ids_of_reference(*, reference: str, limit: int) -> list:
    """The sagas whose payment a provider reference belongs to: a charge's ``ch_...`` or a
    refund's ``re_...``, as the ledger booked it (indexed)."""
    return list(
        LedgerEntry.objects.filter(provider_reference=reference.strip(), payment__saga_id__isnull=False)
        .values_list("payment__saga_id", flat=True)
        .distinct()[:limit]
    )


def ledger_of_order(*, order_id: int) -> list[LedgerEntry]:
    return list(LedgerEntry.objects.filter(order_id=order_id).order_by("id"))


def records_of_step_keys(step_keys: list[str]) -> list[KeyRecord]:
    """What the steps' keys led to here: payments, ledger entries, and the gateway's calls
    (whose keys are derived from the step's, see ``provider_key``)."""
    records = [
        KeyRecord(payment.idempotency_key, "payment", payment.idempotency_key, f"#{payment.pk} {payment.status}")
        for payment in Payment.objects.filter(idempotency_key__in=step_keys).order_by("id")
    ]
    by_provider_key = {provider_key(key): key for key in step_keys}
    for entry in LedgerEntry.objects.filter(idempotency_key__in=list(by_provider_key)).order_by("id"):
        records.append(
            KeyRecord(
                by_provider_key[entry.idempotency_key],
                f"ledger {entry.kind}",
                entry.idempotency_key,
                entry.provider_reference,
            )
        )
    for charge in GatewayCharge.objects.filter(idempotency_key__in=list(by_provider_key)).order_by("id"):
        outcome = "succeeded" if charge.succeeded else f"failed: {charge.error}"
        records.append(
            KeyRecord(
                by_provider_key[charge.idempotency_key],
                f"gateway {charge.kind}",
                charge.idempotency_key,
                f"{charge.transaction_id} ({outcome})",
            )
        )
    return records
