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
from inventory.models import Product, Reservation, StockLevel
from inventory.services import LineRequest, product_upsert, stock_reserve
from orders.models import Notification, Order, OrderLine
from outbox.models import OutboxMessage
from payments.models import GatewayCharge, LedgerEntry, Payment
from payments.services import provider_key
from sagas.keys import step_key
from sagas.models import Phase, SagaInstance
from shipping.models import CarrierShipment, Shipment
from shipping.services import carrier_key
from testing import scenarios

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
    return GatewayCharge.objects.get(idempotency_key=provider_key(step_key(order.saga_id, "charge_payment")))


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


def test_a_completed_saga_whose_order_is_cancelled_is_reported_and_its_carrier_shipment_is_live(product):
    order = scenarios.confirmed()
    Order.objects.filter(pk=order.pk).update(status=Order.Status.CANCELLED)

    report = audit_run(full=True)

    # The carrier still holds the shipment of an order that now says cancelled.
    assert found(report) == {
        (Kind.SAGA_ORDER_STATUS_MISMATCH, f"order:{order.pk}"),
        (Kind.CARRIER_SHIPMENT_LIVE_CANCELLED, f"order:{order.pk}"),
    }
    finding = next(f for f in report.findings if f.kind == Kind.SAGA_ORDER_STATUS_MISMATCH)

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
        idempotency_key=provider_key(step_key(order.saga_id, "charge_payment", compensation=True)),
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
    GatewayCharge.objects.filter(
        idempotency_key=provider_key(step_key(order.saga_id, "charge_payment", compensation=True))
    ).update(charge_transaction_id="ch_someone_else")
    assert "We refunded 495.00 EUR." in Notification.objects.get(order=order).body

    report = audit_run(full=True)

    # The customer was told of a refund that the order's charge never got.
    assert found(report) == {
        (Kind.CANCELLED_MONEY_HELD, f"order:{order.pk}"),
        (Kind.CANCELLATION_REFUND_UNMADE, f"order:{order.pk}"),
    }
    finding = next(f for f in report.findings if f.kind == Kind.CANCELLED_MONEY_HELD)

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
        idempotency_key=provider_key(step_key(uuid.uuid4(), "charge_payment")),
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
        idempotency_key=provider_key(step_key(order.saga_id, "charge_payment")) + ":attempt-2",
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
        idempotency_key=provider_key(step_key(uuid.uuid4(), "charge_payment")),
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
        idempotency_key=provider_key(step_key(order.saga_id, "charge_payment", compensation=True)),
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

    findings = audit_run(full=True).findings

    assert {finding.kind for finding in findings} == {Kind.OUTBOX_STALE}
    by_key = {finding.key: finding.detail for finding in findings}
    assert sorted(by_key) == ["outbox:payments", "outbox:stream"]  # the commands, the order.placed events
    assert by_key["outbox:payments"].startswith("2 message(s) to payments due and unpublished")
    assert by_key["outbox:stream"].startswith("2 message(s) to stream due and unpublished")
    assert by_key["outbox:stream"].endswith("(is the relay running, and the event stream reachable?)")


# ---------------------------------------------------------------------------
# 7. The providers' own books: the carrier's shipments against our shipments and the
#    order's state; the gateway's refunds against their charges; the cancellation notice
#    against the gateway's refunds.
# ---------------------------------------------------------------------------


def _carrier_shipment(order: Order) -> CarrierShipment:
    return CarrierShipment.objects.get(
        idempotency_key=carrier_key(scenarios.saga_of(order).step_key("create_shipment", Phase.FORWARD))
    )


def _book_at_carrier(order: Order, *, suffix: str = "") -> CarrierShipment:
    """A shipment the carrier accepted under the saga's create step key (plus ``suffix``)."""
    key = carrier_key(scenarios.saga_of(order).step_key("create_shipment", Phase.FORWARD)) + suffix
    return CarrierShipment.objects.create(
        idempotency_key=key, reference=f"shp_planted{suffix}", tracking_number="TRK1", accepted=True
    )


def _refund_at_gateway(charge: GatewayCharge, *, key: str, amount: int | None = None) -> GatewayCharge:
    return GatewayCharge.objects.create(
        idempotency_key=key,
        kind="refund",
        transaction_id=f"re_{key}",
        charge_transaction_id=charge.transaction_id,
        amount=charge.amount if amount is None else amount,
        currency=charge.currency,
        succeeded=True,
    )


def test_clean_orders_give_nothing_from_the_providers_books(product):
    scenarios.confirmed()
    scenarios.out_of_stock()
    scenarios.address_rejected()
    cancelled = scenarios.cancelled_after_shipment()
    # The carrier's book has a live, a rejected and a cancelled shipment; the gateway a refund.
    assert CarrierShipment.objects.filter(accepted=True, cancelled=False).count() == 1
    assert CarrierShipment.objects.filter(accepted=False).count() == 1
    assert _carrier_shipment(cancelled).cancelled
    assert GatewayCharge.objects.filter(kind="refund").count() == 3
    # Honest notices: a refund is announced where one was made, and only there.
    notices = dict(Notification.objects.filter(kind="cancellation").values_list("order__cancel_reason", "body"))
    assert ["We refunded" in body for body in notices.values()].count(True) == 3

    assert audit_run(full=True).clean


def test_a_live_carrier_shipment_of_a_saga_still_in_flight_is_not_reported(product):
    # Booked at the carrier, our row not committed yet: the step is still running.
    order = scenarios.place()
    _book_at_carrier(order)

    assert audit_run(full=True).clean


def test_a_live_carrier_shipment_of_a_cancelled_order_is_reported(product):
    # Our shipment row is cancelled, so every check of our own tables is satisfied.
    order = scenarios.cancelled_after_shipment()
    booked = _carrier_shipment(order)
    CarrierShipment.objects.filter(pk=booked.pk).update(cancelled=False)

    finding = only(audit_run(full=True), Kind.CARRIER_SHIPMENT_LIVE_CANCELLED)

    assert finding.key == f"order:{order.pk}"
    assert finding.involved == {"order": order.pk, "saga": str(order.saga_id), "carrier_shipments": [booked.pk]}
    assert booked.reference in finding.detail and "cancelled, its saga compensated" in finding.detail


def test_a_shipment_the_carrier_booked_after_its_step_was_compensated_is_reported(product):
    # Issue 24's sixth case: the cancel found nothing and the carrier booked the shipment
    # later; our books hold no shipment (no step created one) and the order is cancelled.
    order = scenarios.out_of_stock()
    booked = _book_at_carrier(order)

    report = audit_run(full=True)

    assert found(report) == {
        (Kind.CARRIER_SHIPMENT_LIVE_CANCELLED, f"order:{order.pk}"),
        (Kind.CARRIER_SHIPMENT_UNRECORDED, f"carrier_shipment:{booked.pk}"),
    }


def test_a_live_carrier_shipment_of_a_failed_saga_is_reported_beside_the_failure(product):
    order = scenarios.cancelled_after_shipment()
    CarrierShipment.objects.filter(pk=_carrier_shipment(order).pk).update(cancelled=False)
    # The compensation gave up before cancelling the order: it is pending, its saga failed.
    Order.objects.filter(pk=order.pk).update(status=Order.Status.PENDING)
    SagaInstance.objects.filter(pk=order.saga_id).update(state="failed", failure_reason="planted")

    report = audit_run(full=True)

    assert found(report) == {
        (Kind.SAGA_FAILED, f"order:{order.pk}"),
        (Kind.CARRIER_SHIPMENT_LIVE_CANCELLED, f"order:{order.pk}"),
    }


def test_a_carrier_shipment_without_our_shipment_row_is_reported(product):
    order = scenarios.confirmed()
    # Our row moves to another key: the order still has one live shipment in our books.
    Shipment.objects.filter(order_id=order.pk).update(idempotency_key="planted")
    booked = _carrier_shipment(order)

    finding = only(audit_run(full=True), Kind.CARRIER_SHIPMENT_UNRECORDED)

    assert finding.key == f"carrier_shipment:{booked.pk}"
    assert finding.involved == {"carrier_shipment": booked.pk, "order": order.pk, "saga": str(order.saga_id)}
    assert "(live)" in finding.detail


def test_a_carrier_shipment_the_carrier_rejected_needs_no_shipment_row(product):
    scenarios.address_rejected()
    assert not CarrierShipment.objects.get().accepted

    assert audit_run(full=True).clean


def test_an_order_booked_twice_at_the_carrier_is_reported(product):
    order = scenarios.confirmed()
    second = _book_at_carrier(order, suffix=":retry")

    report = audit_run(full=True)

    # The second booking is also unknown to our books.
    assert found(report) == {
        (Kind.CARRIER_SHIPMENT_TWICE, f"order:{order.pk}"),
        (Kind.CARRIER_SHIPMENT_UNRECORDED, f"carrier_shipment:{second.pk}"),
    }
    twice = next(f for f in report.findings if f.kind == Kind.CARRIER_SHIPMENT_TWICE)
    assert twice.involved["carrier_shipments"] == [_carrier_shipment(order).pk, second.pk]


def test_a_charge_refunded_twice_under_another_key_is_reported(product):
    # Issue 24's fifth case: the saga refunded, then a replayed refund under a derived key
    # refunded again. Our ledger and the saga's keys see one refund; the gateway has two.
    order = scenarios.out_of_stock()
    charge = _canonical_charge(order)
    second = _refund_at_gateway(charge, key=provider_key(step_key(order.saga_id, "charge_payment")) + ":undo")
    first = GatewayCharge.objects.get(
        idempotency_key=provider_key(step_key(order.saga_id, "charge_payment", compensation=True))
    )

    report = audit_run(full=True)

    # The refunds are matched to the charge whatever their key: the order's money is off too.
    assert found(report) == {
        (Kind.GATEWAY_CHARGE_REFUNDED_TWICE, f"gateway_charge:{charge.pk}"),
        (Kind.GATEWAY_REFUNDS_EXCEED_CHARGE, f"gateway_charge:{charge.pk}"),
        (Kind.PAYMENT_LEDGER_MISMATCH, f"order:{order.pk}"),
        (Kind.CANCELLED_MONEY_HELD, f"order:{order.pk}"),
    }
    finding = next(f for f in report.findings if f.kind == Kind.GATEWAY_CHARGE_REFUNDED_TWICE)
    assert finding.involved == {
        "gateway_charge": charge.pk,
        "transaction_id": charge.transaction_id,
        "refunds": [first.pk, second.pk],
        "order": order.pk,
    }


def test_a_refund_beyond_its_charge_made_in_the_gateways_console_is_reported(product):
    order = scenarios.confirmed()
    charge = _canonical_charge(order)
    _refund_at_gateway(charge, key="console:re_1", amount=charge.amount + 1)

    report = audit_run(full=True)
    assert found(report) == {
        (Kind.GATEWAY_REFUNDS_EXCEED_CHARGE, f"gateway_charge:{charge.pk}"),
        (Kind.PAYMENT_LEDGER_MISMATCH, f"order:{order.pk}"),  # a refund our ledger does not book
    }
    finding = next(f for f in report.findings if f.kind == Kind.GATEWAY_REFUNDS_EXCEED_CHARGE)

    assert finding.key == f"gateway_charge:{charge.pk}"
    assert f"give back {charge.amount + 1}, more than was charged" in finding.detail


def test_two_partial_refunds_of_one_charge_are_reported(product):
    order = scenarios.confirmed()
    charge = _canonical_charge(order)
    _refund_at_gateway(charge, key="console:re_1", amount=1000)
    _refund_at_gateway(charge, key="console:re_2", amount=1000)

    report = audit_run(full=True)
    assert found(report) == {
        (Kind.GATEWAY_CHARGE_REFUNDED_TWICE, f"gateway_charge:{charge.pk}"),
        (Kind.PAYMENT_LEDGER_MISMATCH, f"order:{order.pk}"),
    }
    finding = next(f for f in report.findings if f.kind == Kind.GATEWAY_CHARGE_REFUNDED_TWICE)

    assert finding.key == f"gateway_charge:{charge.pk}"
    assert "2 refund(s)" in finding.detail


def test_a_cancellation_notice_announcing_a_refund_that_was_never_made_is_reported(product, settings):
    # Issue 24's fourth case: nothing was charged at the gateway, yet the email says refunded.
    settings.NOTIFY_UNCHARGED_CANCELLATIONS = True  # a shop that tells of declined cards too
    order = scenarios.declined()
    notice = Notification.objects.get(order=order)
    Notification.objects.filter(pk=notice.pk).update(body="your order was cancelled.\nWe refunded 45.00 EUR.\n")

    finding = only(audit_run(full=True), Kind.CANCELLATION_REFUND_UNMADE)

    assert finding.key == f"order:{order.pk}"
    assert finding.involved == {"order": order.pk, "saga": str(order.saga_id), "notification": notice.pk}


def test_a_refund_of_another_orders_charge_does_not_back_a_notice(product, settings):
    settings.NOTIFY_UNCHARGED_CANCELLATIONS = True  # a shop that tells of declined cards too
    refunded = scenarios.out_of_stock()
    order = scenarios.declined()
    Notification.objects.filter(order=order).update(body="We refunded 45.00 EUR.")
    Notification.objects.filter(order=refunded).update(body="We refunded 495.00 EUR.")

    finding = only(audit_run(full=True), Kind.CANCELLATION_REFUND_UNMADE)

    assert finding.key == f"order:{order.pk}"


def test_a_refund_of_the_charge_named_by_the_payment_backs_the_notice(product):
    # A charge made by hand is known by the payment's provider charge id, not by a saga key.
    order = scenarios.out_of_stock()
    charge = _canonical_charge(order)
    GatewayCharge.objects.filter(pk=charge.pk).update(idempotency_key="console:ch_1")
    Notification.objects.filter(order=order).update(body="We refunded 495.00 EUR.")

    report = audit_run(full=True)

    assert Kind.CANCELLATION_REFUND_UNMADE not in {f.kind for f in report.findings}


def test_a_refund_made_under_another_key_backs_the_notice(product):
    # Refunded in the gateway's console, say: found by the charge it refunds, not by its key.
    order = scenarios.out_of_stock()
    GatewayCharge.objects.filter(
        idempotency_key=provider_key(step_key(order.saga_id, "charge_payment", compensation=True))
    ).update(idempotency_key="console:re_1")
    Notification.objects.filter(order=order).update(body="We refunded 495.00 EUR.")

    report = audit_run(full=True)

    assert Kind.CANCELLATION_REFUND_UNMADE not in {f.kind for f in report.findings}
