"""Each invariant: a consistent state from real sagas, one violation planted directly in the
tables, and the auditor reports exactly that, on exactly those objects.

A few corruptions break two invariants at once by their nature (a live shipment of a
cancelled order is also a shipment without a captured payment); their tests say so.
"""

import uuid
from datetime import timedelta

import pytest
from django.db.models import F
from django.utils import timezone

from audit.models import Violation
from audit.services import audit_run
from audit.tests import scenarios
from inventory.models import Product, Reservation, StockLevel
from inventory.services import LineRequest, product_upsert, stock_reserve
from orders.models import Notification, Order, OrderLine
from outbox.models import OutboxMessage
from payments.models import GatewayCharge, LedgerEntry, Payment
from sagas.models import SagaInstance
from shipping.models import Shipment

pytestmark = pytest.mark.django_db

Kind = Violation.Kind


@pytest.fixture
def product() -> Product:
    return scenarios.catalog()


def found(report) -> set[tuple[str, str]]:
    return {(finding.kind, finding.key) for finding in report.findings}


def only(report, kind: str):
    """The one finding of the report, which must be of ``kind``."""
    assert [finding.kind for finding in report.findings] == [kind], report.findings
    return report.findings[0]


def _canonical_charge(order: Order) -> GatewayCharge:
    return GatewayCharge.objects.get(idempotency_key=f"pay:{order.saga_id}:charge_payment")


# ---------------------------------------------------------------------------
# A clean run.
# ---------------------------------------------------------------------------


def test_a_clean_run_after_confirmed_cancelled_and_running_orders_reports_nothing(product):
    orders = [
        scenarios.confirmed(quantity=2),
        scenarios.confirmed(),
        scenarios.declined(),
        scenarios.out_of_stock(),
        scenarios.address_rejected(),
        scenarios.cancelled_after_shipment(),
    ]
    scenarios.place()  # in flight: its first command not handled yet
    assert Shipment.objects.filter(status="cancelled").exists()  # every path was taken

    report = audit_run(full=True)

    assert report.findings == [] and report.clean
    assert report.full and report.checked_orders == len(orders) + 1
    assert not Violation.objects.exists()


# ---------------------------------------------------------------------------
# 1. Every order has exactly one saga; every terminal saga agrees with its order's status.
# ---------------------------------------------------------------------------


def test_an_order_without_a_saga_is_reported(product):
    scenarios.confirmed()
    orphan = Order.objects.create(
        customer_email="bob@example.com",
        customer_name="Bob",
        shipping_address=scenarios.ADDRESS,
        total_amount=100,
        currency="EUR",
        saga_id=uuid.uuid4(),
    )

    finding = only(audit_run(full=True), Kind.ORDER_WITHOUT_SAGA)

    assert finding.key == f"order:{orphan.pk}"
    assert finding.involved == {"order": orphan.pk, "saga": str(orphan.saga_id)}


def test_a_saga_whose_order_does_not_exist_is_reported(product):
    scenarios.confirmed()
    saga = SagaInstance.objects.create(
        definition_name="order_fulfilment", definition_version=1, aggregate="order", aggregate_id="999999", data={}
    )

    finding = only(audit_run(full=True), Kind.SAGA_WITHOUT_ORDER)

    assert finding.key == f"saga:{saga.pk}"
    assert "999999" in finding.detail


def test_a_completed_saga_whose_order_is_cancelled_is_reported(product):
    order = scenarios.confirmed()
    Order.objects.filter(pk=order.pk).update(status=Order.Status.CANCELLED)

    finding = only(audit_run(full=True), Kind.SAGA_ORDER_STATUS_MISMATCH)

    assert finding.key == f"order:{order.pk}"
    assert finding.involved["saga"] == str(order.saga_id)
    assert finding.involved["state"] == "completed" and finding.involved["status"] == "cancelled"


def test_a_failed_saga_is_reported_as_its_own_kind(product):
    order = scenarios.place()
    SagaInstance.objects.filter(pk=order.saga_id).update(
        state="failed", failure_reason="compensation charge_payment failed after 5 attempts"
    )

    finding = only(audit_run(full=True), Kind.SAGA_FAILED)

    assert finding.key == f"order:{order.pk}"
    assert "compensation charge_payment failed" in finding.detail


# ---------------------------------------------------------------------------
# 2. A confirmed order: one charge equal to its total, no refund, each line reserved once,
#    one live shipment, one confirmation email.
# ---------------------------------------------------------------------------


def test_a_confirmed_order_charged_other_than_its_total_is_reported(product):
    order = scenarios.confirmed()
    scenarios.confirmed()
    Order.objects.filter(pk=order.pk).update(total_amount=F("total_amount") + 1)

    finding = only(audit_run(full=True), Kind.CONFIRMED_NOT_CHARGED_ONCE)

    assert finding.key == f"order:{order.pk}"
    assert "1 charge(s) in the ledger for 4500" in finding.detail


def test_a_refunded_confirmed_order_is_reported_and_its_shipment_has_no_payment_left(product):
    order = scenarios.confirmed()
    charge = _canonical_charge(order)
    refund = GatewayCharge.objects.create(
        idempotency_key=f"pay:{order.saga_id}:charge_payment:compensate",
        kind="refund",
        transaction_id="re_planted",
        charge_transaction_id=charge.transaction_id,
        amount=charge.amount,
        currency=charge.currency,
        succeeded=True,
    )
    payment = Payment.objects.get(order_id=order.pk)
    LedgerEntry.objects.create(
        payment=payment,
        order_id=order.pk,
        kind="refund",
        amount=refund.amount,
        currency=refund.currency,
        idempotency_key=refund.idempotency_key,
        provider_reference=refund.transaction_id,
    )
    Payment.objects.filter(pk=payment.pk).update(status="refunded")
    shipment = Shipment.objects.get(order_id=order.pk)

    report = audit_run(full=True)

    assert found(report) == {
        (Kind.CONFIRMED_REFUNDED, f"order:{order.pk}"),
        (Kind.SHIPMENT_WITHOUT_PAYMENT, f"shipment:{shipment.pk}"),
    }


def test_a_confirmed_order_reserved_twice_is_reported(product):
    order = scenarios.confirmed(quantity=2)
    # A second reservation under another key: consistent for the product (level, movements
    # and lines agree), but the order holds its line twice.
    second = stock_reserve(order_id=order.pk, idempotency_key="planted", lines=[LineRequest("SKU-A", 2)])

    finding = only(audit_run(full=True), Kind.CONFIRMED_STOCK_WRONG)

    assert finding.key == f"order:{order.pk}"
    assert second.pk in finding.involved["reservations"] and len(finding.involved["reservations"]) == 2


def test_a_confirmed_order_line_that_was_never_reserved_is_reported(product):
    order = scenarios.confirmed()
    other = product_upsert(sku="SKU-B", name="Kettle", price_amount=100)
    OrderLine.objects.create(
        order=order, sku=other.sku, name=other.name, quantity=1, unit_price_amount=100, currency="EUR"
    )

    finding = only(audit_run(full=True), Kind.CONFIRMED_STOCK_WRONG)

    assert finding.key == f"order:{order.pk}"
    assert "1 product(s) whose ordered, reserved and moved quantities differ" in finding.detail


def test_a_confirmed_order_with_a_second_live_shipment_is_reported(product):
    order = scenarios.confirmed()
    extra = Shipment.objects.create(order_id=order.pk, idempotency_key="planted", status="created")

    finding = only(audit_run(full=True), Kind.CONFIRMED_SHIPMENT_NOT_ONE)

    assert finding.key == f"order:{order.pk}"
    assert extra.pk in finding.involved["shipments"] and len(finding.involved["shipments"]) == 2


def test_a_confirmed_order_without_its_confirmation_email_is_reported(product):
    order = scenarios.confirmed()
    Notification.objects.filter(order=order).delete()

    finding = only(audit_run(full=True), Kind.CONFIRMED_EMAIL_NOT_ONE)

    assert finding.key == f"order:{order.pk}"
    assert finding.detail.startswith("0 confirmation email(s)")


# ---------------------------------------------------------------------------
# 3. A cancelled order: charges minus refunds is zero, no live reservation, no live
#    shipment, one cancellation notice if anything had been charged or reserved.
# ---------------------------------------------------------------------------


def test_a_cancelled_order_whose_refund_went_to_another_charge_is_reported(product):
    order = scenarios.out_of_stock()
    GatewayCharge.objects.filter(idempotency_key=f"pay:{order.saga_id}:charge_payment:compensate").update(
        charge_transaction_id="ch_someone_else"
    )

    finding = only(audit_run(full=True), Kind.CANCELLED_MONEY_HELD)

    assert finding.key == f"order:{order.pk}"
    assert "0 in our ledger and 49500 at the gateway" in finding.detail  # 11 x 4500, never refunded


def test_a_cancelled_order_charged_at_the_gateway_but_not_in_our_ledger_is_reported(product):
    # The worst case: the customer's money taken, our books empty, the order cancelled.
    order = scenarios.declined()
    charge = _canonical_charge(order)
    GatewayCharge.objects.filter(pk=charge.pk).update(succeeded=True, error="")

    report = audit_run(full=True)

    assert found(report) == {
        (Kind.CANCELLED_MONEY_HELD, f"order:{order.pk}"),
        (Kind.PAYMENT_LEDGER_MISMATCH, f"order:{order.pk}"),
        # Declined as far as we knew, so the customer was not written to: charged and not told.
        (Kind.CANCELLED_NOTICE_WRONG, f"order:{order.pk}"),
    }
    mismatch = next(f for f in report.findings if f.kind == Kind.PAYMENT_LEDGER_MISMATCH)
    assert mismatch.involved["references"] == [charge.transaction_id]
    assert "at the gateway, not in our ledger" in mismatch.detail


def test_a_cancelled_order_still_holding_a_reservation_is_reported(product):
    order = scenarios.address_rejected()
    held = stock_reserve(order_id=order.pk, idempotency_key="planted", lines=[LineRequest("SKU-A", 1)])

    finding = only(audit_run(full=True), Kind.CANCELLED_STOCK_HELD)

    assert finding.key == f"order:{order.pk}"
    assert finding.involved["reservations"] == [held.pk]


def test_a_cancelled_order_with_a_live_shipment_is_reported_and_it_has_no_payment(product):
    order = scenarios.cancelled_after_shipment()
    shipment = Shipment.objects.get(order_id=order.pk)
    Shipment.objects.filter(pk=shipment.pk).update(status="created", cancelled_at=None)

    report = audit_run(full=True)

    assert found(report) == {
        (Kind.CANCELLED_SHIPMENT_LIVE, f"order:{order.pk}"),
        (Kind.SHIPMENT_WITHOUT_PAYMENT, f"shipment:{shipment.pk}"),
    }


def test_a_cancelled_order_that_was_charged_without_a_cancellation_notice_is_reported(product):
    order = scenarios.out_of_stock()
    Notification.objects.filter(order=order).delete()

    finding = only(audit_run(full=True), Kind.CANCELLED_NOTICE_WRONG)

    assert finding.key == f"order:{order.pk}"
    assert "money was charged or stock reserved" in finding.detail


def test_a_cancelled_order_that_touched_nothing_needs_no_cancellation_notice(product):
    order = scenarios.declined()
    Notification.objects.filter(order=order).delete()

    assert audit_run(full=True).clean


# ---------------------------------------------------------------------------
# 4. No charge without an order; no shipment without a captured payment; no payment charged
#    twice (the gateway's charges agree with our ledger).
# ---------------------------------------------------------------------------


def test_a_gateway_charge_for_no_order_is_reported(product):
    scenarios.confirmed()
    stray = GatewayCharge.objects.create(
        idempotency_key=f"pay:{uuid.uuid4()}:charge_payment",
        kind="charge",
        transaction_id="ch_stray",
        amount=4500,
        currency="EUR",
        token="tok_visa",
        succeeded=True,
    )

    finding = only(audit_run(full=True), Kind.CHARGE_WITHOUT_ORDER)

    assert finding.key == f"gateway_charge:{stray.pk}"
    assert finding.involved == {"gateway_charge": stray.pk, "transaction_id": "ch_stray"}


def test_a_second_gateway_charge_for_an_order_under_another_key_is_reported(product):
    order = scenarios.confirmed()
    second = GatewayCharge.objects.create(
        idempotency_key=f"pay:{order.saga_id}:charge_payment:attempt-2",
        kind="charge",
        transaction_id="ch_second",
        amount=4500,
        currency="EUR",
        succeeded=True,
    )

    finding = only(audit_run(full=True), Kind.CHARGE_WITHOUT_ORDER)

    assert finding.key == f"gateway_charge:{second.pk}"


def test_a_declined_charge_is_not_a_charge(product):
    GatewayCharge.objects.create(
        idempotency_key=f"pay:{uuid.uuid4()}:charge_payment",
        kind="charge",
        transaction_id="ch_declined",
        amount=4500,
        currency="EUR",
        succeeded=False,
        error="card declined",
    )

    assert audit_run(full=True).clean


def test_a_gateway_refund_missing_from_our_ledger_is_reported(product):
    order = scenarios.confirmed()
    charge = _canonical_charge(order)
    GatewayCharge.objects.create(
        idempotency_key=f"pay:{order.saga_id}:charge_payment:compensate",
        kind="refund",
        transaction_id="re_unrecorded",
        charge_transaction_id=charge.transaction_id,
        amount=charge.amount,
        currency=charge.currency,
        succeeded=True,
    )

    finding = only(audit_run(full=True), Kind.PAYMENT_LEDGER_MISMATCH)

    assert finding.key == f"order:{order.pk}"
    assert finding.involved["references"] == ["re_unrecorded"]


def test_an_order_charged_twice_in_our_ledger_is_reported(product):
    order = scenarios.confirmed()
    twice = Payment.objects.create(
        order_id=order.pk, idempotency_key="planted", amount=4500, currency="EUR", status="charged"
    )
    LedgerEntry.objects.create(
        payment=twice,
        order_id=order.pk,
        kind="charge",
        amount=4500,
        currency="EUR",
        idempotency_key="pay:planted",
        provider_reference="ch_nowhere",
    )

    report = audit_run(full=True)

    assert found(report) == {
        (Kind.CONFIRMED_NOT_CHARGED_ONCE, f"order:{order.pk}"),
        (Kind.PAYMENT_LEDGER_MISMATCH, f"order:{order.pk}"),
    }
    mismatch = next(f for f in report.findings if f.kind == Kind.PAYMENT_LEDGER_MISMATCH)
    assert "charge ch_nowhere of 4500 EUR in our ledger, not at the gateway" in mismatch.detail


def test_a_payment_whose_status_disagrees_with_its_ledger_entries_is_reported(product):
    order = scenarios.out_of_stock()
    payment = Payment.objects.get(order_id=order.pk)
    Payment.objects.filter(pk=payment.pk).update(status="charged")

    finding = only(audit_run(full=True), Kind.PAYMENT_LEDGER_MISMATCH)

    assert finding.involved["payments"] == [payment.pk]
    assert "is charged with 1 charge(s) and 1 refund(s)" in finding.detail


def test_a_live_shipment_without_a_captured_payment_is_reported(product):
    order = scenarios.place()  # in flight, nothing charged yet
    shipment = Shipment.objects.create(order_id=order.pk, idempotency_key="planted", status="created")

    finding = only(audit_run(full=True), Kind.SHIPMENT_WITHOUT_PAYMENT)

    assert finding.key == f"shipment:{shipment.pk}"
    assert finding.involved == {"shipment": shipment.pk, "order": order.pk}


# ---------------------------------------------------------------------------
# 5. Stock: on hand and reserved equal the sums of movements and live reservations.
# ---------------------------------------------------------------------------


def test_a_stock_level_that_disagrees_with_its_movements_is_reported(product):
    scenarios.confirmed(quantity=3)
    scenarios.address_rejected()
    StockLevel.objects.filter(product=product).update(on_hand=F("on_hand") + 5)

    finding = only(audit_run(full=True), Kind.STOCK_MISMATCH)

    assert finding.key == f"product:{product.pk}"
    assert finding.detail == ("SKU-A: on hand 15 (receipts 10), reserved 3 (movements 3, live reservations 3)")


def test_a_reservation_released_without_its_movements_is_reported(product):
    order = scenarios.confirmed()
    Reservation.objects.filter(order_id=order.pk).update(status="released")

    reservation = Reservation.objects.get(order_id=order.pk)

    report = audit_run(full=True)

    # The reservation says released but no movement released it, so the product's reserved
    # count no longer matches its live reservations, and the confirmed order holds nothing.
    assert found(report) == {
        (Kind.RESERVATION_MISMATCH, f"reservation:{reservation.pk}"),
        (Kind.STOCK_MISMATCH, f"product:{product.pk}"),
        (Kind.CONFIRMED_STOCK_WRONG, f"order:{order.pk}"),
    }


# ---------------------------------------------------------------------------
# 6. No saga past its deadline unflagged; no outbox message unpublished for too long.
# ---------------------------------------------------------------------------


def test_a_running_saga_past_its_deadline_and_not_stuck_is_reported(product):
    order = scenarios.place()
    SagaInstance.objects.filter(pk=order.saga_id).update(
        step_deadline=timezone.now() - timedelta(minutes=10), stuck=False
    )

    finding = only(audit_run(full=True), Kind.SAGA_OVERDUE_NOT_STUCK)

    assert finding.key == f"saga:{order.saga_id}"
    assert finding.involved == {"saga": str(order.saga_id), "aggregate": f"order:{order.pk}"}


def test_a_saga_past_its_deadline_that_is_flagged_stuck_is_not_reported(product):
    order = scenarios.place()
    SagaInstance.objects.filter(pk=order.saga_id).update(
        step_deadline=timezone.now() - timedelta(minutes=10), stuck=True, stuck_reason="planted"
    )

    assert audit_run(full=True).clean


def test_outbox_messages_unpublished_for_too_long_are_reported_once_per_destination(product, settings):
    settings.AUDIT_OUTBOX_MAX_AGE_SECONDS = 60
    first, second = scenarios.place(), scenarios.place()
    long_ago = timezone.now() - timedelta(minutes=5)
    OutboxMessage.objects.filter(correlation_id__in=[str(first.saga_id), str(second.saga_id)]).update(
        created_at=long_ago, available_at=long_ago
    )
    scenarios.place()  # a fresh one is not late

    finding = only(audit_run(full=True), Kind.OUTBOX_STALE)

    assert finding.key == "outbox:payments"
    assert finding.detail.startswith("2 message(s) to payments due and unpublished")
