"""What the payments context books: one ledger entry per movement of money, whatever how often a
step is delivered, a refund as a new entry beside its charge, and no entry ever changed."""

import pytest
from django.db import transaction
from django.db.models import Sum

from payments.exceptions import PaymentDeclined, PaymentRefused
from payments.gateway import FakeGateway
from payments.models import LedgerEntry, Payment
from payments.services import payment_record_charge, payment_record_refund, provider_key

pytestmark = pytest.mark.django_db

ORDER_ID = 7001
CHARGE_KEY = "saga-1:charge_payment"
REFUND_KEY = "saga-1:charge_payment:compensate"


def _net(order_id: int = ORDER_ID) -> int:
    """Money kept from the customer, by the ledger: charges less refunds."""
    entries = LedgerEntry.objects.filter(order_id=order_id)
    charged = entries.filter(kind=LedgerEntry.Kind.CHARGE).aggregate(total=Sum("amount"))["total"] or 0
    refunded = entries.filter(kind=LedgerEntry.Kind.REFUND).aggregate(total=Sum("amount"))["total"] or 0
    return charged - refunded


def _charge(amount: int = 4500, token: str = "tok_visa"):
    return FakeGateway().charge(idempotency_key=provider_key(CHARGE_KEY), amount=amount, currency="EUR", token=token)


def _refund(charge):
    return FakeGateway().refund(
        idempotency_key=provider_key(REFUND_KEY),
        charge_transaction_id=charge.transaction_id,
        amount=charge.amount,
        currency=charge.currency,
    )


def test_a_charge_recorded_twice_is_booked_once():
    charge = _charge()
    first = payment_record_charge(order_id=ORDER_ID, step_key=CHARGE_KEY, response=charge)
    again = payment_record_charge(order_id=ORDER_ID, step_key=CHARGE_KEY, response=charge)
    assert again.pk == first.pk and first.status == Payment.Status.CHARGED
    entry = LedgerEntry.objects.get(order_id=ORDER_ID)
    assert (entry.kind, entry.amount, entry.currency) == ("charge", 4500, "EUR")
    assert (entry.idempotency_key, entry.provider_reference) == (provider_key(CHARGE_KEY), charge.transaction_id)
    assert _net() == 4500


def test_a_declined_charge_is_a_business_failure_that_books_nothing():
    with pytest.raises(PaymentDeclined, match="card declined"):
        payment_record_charge(order_id=ORDER_ID, step_key=CHARGE_KEY, response=_charge(token="tok_chargeDeclined"))
    assert not Payment.objects.exists() and not LedgerEntry.objects.exists()


def test_a_refund_is_a_new_entry_beside_its_charge_and_is_booked_once():
    charge = _charge()
    payment = payment_record_charge(order_id=ORDER_ID, step_key=CHARGE_KEY, response=charge)
    refund = _refund(charge)
    for _ in range(2):  # delivered twice
        refunded = payment_record_refund(
            order_id=ORDER_ID, charge_key=CHARGE_KEY, refund_key=REFUND_KEY, charge=charge, refund=refund
        )
    assert refunded.pk == payment.pk and refunded.status == Payment.Status.REFUNDED
    assert list(LedgerEntry.objects.filter(order_id=ORDER_ID).values_list("kind", "amount")) == [
        ("charge", 4500),
        ("refund", 4500),
    ]
    assert _net() == 0


def test_a_refund_before_any_charge_books_nothing_and_refuses_the_late_charge():
    voided = payment_record_refund(
        order_id=ORDER_ID, charge_key=CHARGE_KEY, refund_key=REFUND_KEY, charge=None, refund=None
    )
    assert voided.status == Payment.Status.VOIDED
    with pytest.raises(PaymentRefused, match="voided"):
        payment_record_charge(order_id=ORDER_ID, step_key=CHARGE_KEY, response=_charge())
    assert not LedgerEntry.objects.exists() and _net() == 0


def test_a_charge_the_gateway_made_but_we_never_recorded_is_booked_with_its_refund():
    charge = _charge()
    refund = _refund(charge)
    payment_record_refund(order_id=ORDER_ID, charge_key=CHARGE_KEY, refund_key=REFUND_KEY, charge=charge, refund=refund)
    assert list(LedgerEntry.objects.filter(order_id=ORDER_ID).values_list("kind", "amount")) == [
        ("charge", 4500),
        ("refund", 4500),
    ]
    assert _net() == 0


def test_a_charge_recorded_while_its_refund_was_made_is_refunded_again_not_reported_refunded():
    charge = _charge()
    payment_record_charge(order_id=ORDER_ID, step_key=CHARGE_KEY, response=charge)
    with pytest.raises(RuntimeError, match="refunding again"):
        payment_record_refund(
            order_id=ORDER_ID, charge_key=CHARGE_KEY, refund_key=REFUND_KEY, charge=charge, refund=None
        )
    assert Payment.objects.get(idempotency_key=CHARGE_KEY).status == Payment.Status.CHARGED
    assert _net() == 4500


def test_ledger_entries_are_append_only():
    payment_record_charge(order_id=ORDER_ID, step_key=CHARGE_KEY, response=_charge())
    entry = LedgerEntry.objects.get(order_id=ORDER_ID)
    with pytest.raises(Exception, match="append-only"), transaction.atomic():
        LedgerEntry.objects.filter(pk=entry.pk).update(amount=1)
    with pytest.raises(Exception, match="append-only"), transaction.atomic():
        entry.delete()
    assert _net() == 4500
