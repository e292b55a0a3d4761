"""Reads of the payments context, for the storefront API, the dashboard and the auditor."""

from dataclasses import dataclass

from django.db.models import Sum

from payments.models import LedgerEntry, Payment

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
