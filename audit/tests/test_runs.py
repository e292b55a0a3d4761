"""How runs follow each other: incremental runs look only at what changed, every run checks
the open violations again, a full sweep comes at least daily, and violations are kept one
row per problem."""

import logging
from datetime import timedelta

import psycopg
import pytest
from django.db import connection
from django.db.models import F
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from audit.models import AuditRun, StockCheckpoint, Violation
from audit.services import audit_run
from audit.tasks import run as audit_task
from devtools.processes import database_url
from inventory.models import Product, StockLevel
from inventory.services import stock_receive
from orders.models import Notification, Order
from payments.models import GatewayCharge
from payments.services import provider_key
from sagas.keys import step_key
from sagas.models import SagaInstance
from shipping.models import CarrierShipment, Shipment
from shipping.services import carrier_key
from testing import scenarios

pytestmark = pytest.mark.django_db

Kind = Violation.Kind


@pytest.fixture
def product() -> Product:
    return scenarios.catalog()


@pytest.fixture
def no_overlap(settings):
    """Every change in a test shares one transaction and moments apart; with no overlap an
    incremental run starts exactly where the previous one did."""
    settings.AUDIT_INCREMENTAL_OVERLAP_SECONDS = 0


def test_the_first_run_is_a_full_sweep_and_the_next_one_incremental(product, no_overlap):
    scenarios.confirmed()
    first = audit_run()
    second = audit_run()

    assert first.full and first.checked_orders == 1
    assert not second.full and second.checked_orders == 0
    assert second.clean


def test_an_incremental_run_checks_only_the_orders_that_changed(product, no_overlap):
    old = [scenarios.confirmed(), scenarios.out_of_stock(), scenarios.confirmed()]
    audit_run(full=True)

    new = scenarios.confirmed()
    report = audit_run()
    assert (report.full, report.checked_orders, report.findings) == (False, 1, [])

    # A row appended to an old order's context brings that order, and only it, back in.
    Shipment.objects.create(order_id=old[0].pk, idempotency_key="planted", status="created")
    report = audit_run()

    assert (report.full, report.checked_orders) == (False, 1)
    assert {(f.kind, f.key) for f in report.findings} == {(Kind.CONFIRMED_SHIPMENT_NOT_ONE, f"order:{old[0].pk}")}
    assert new.pk not in {f.involved.get("order") for f in report.findings}


def test_an_incremental_run_catches_a_late_charge_on_a_finished_order(product, no_overlap):
    order = scenarios.declined()
    audit_run(full=True)
    charge = GatewayCharge.objects.get(idempotency_key=provider_key(step_key(order.saga_id, "charge_payment")))
    GatewayCharge.objects.create(
        idempotency_key=provider_key(step_key(order.saga_id, "charge_payment", compensation=True)),
        kind="refund",
        transaction_id="re_late",
        charge_transaction_id=charge.transaction_id,
        amount=charge.amount,
        currency=charge.currency,
        succeeded=True,
    )

    report = audit_run()

    assert not report.full and report.checked_orders == 1
    # The charge was declined: its refund gives back money that was never taken.
    assert {f.kind for f in report.findings} == {Kind.PAYMENT_LEDGER_MISMATCH, Kind.GATEWAY_REFUNDS_EXCEED_CHARGE}


def test_an_incremental_run_catches_a_carrier_booking_that_lands_after_the_saga_compensated(product, no_overlap):
    order = scenarios.out_of_stock()
    audit_run(full=True)
    CarrierShipment.objects.create(
        idempotency_key=carrier_key(step_key(order.saga_id, "create_shipment")),
        reference="shp_late",
        tracking_number="T",
        accepted=True,
    )

    report = audit_run()

    assert not report.full and report.checked_orders == 1
    assert {f.kind for f in report.findings} == {
        Kind.CARRIER_SHIPMENT_LIVE_CANCELLED,
        Kind.CARRIER_SHIPMENT_UNRECORDED,
    }


def test_a_second_carrier_booking_under_another_key_stays_open_until_the_carrier_cancels_it(product, no_overlap):
    order = scenarios.confirmed()
    audit_run(full=True)
    second = CarrierShipment.objects.create(
        idempotency_key=carrier_key(step_key(order.saga_id, "create_shipment")) + ":retry",
        reference="shp_retry",
        tracking_number="T",
        accepted=True,
    )
    audit_run()
    assert {v.kind for v in Violation.objects.filter(resolved_at=None)} == {
        Kind.CARRIER_SHIPMENT_TWICE,
        Kind.CARRIER_SHIPMENT_UNRECORDED,
    }

    # Nothing changed: the open violations' shipments are looked at again, found again.
    assert audit_run().resolved == 0
    CarrierShipment.objects.filter(pk=second.pk).update(cancelled=True)
    report = audit_run()

    # One booking left; the cancelled one is still unknown to our books.
    assert not report.full and report.resolved == 1
    assert {(f.kind, f.key) for f in report.findings} == {
        (Kind.CARRIER_SHIPMENT_UNRECORDED, f"carrier_shipment:{second.pk}")
    }


def test_an_incremental_run_catches_a_second_refund_and_keeps_it_open(product, no_overlap):
    order = scenarios.out_of_stock()
    audit_run(full=True)
    charge = GatewayCharge.objects.get(idempotency_key=provider_key(step_key(order.saga_id, "charge_payment")))
    GatewayCharge.objects.create(
        idempotency_key="console:re_1",
        kind="refund",
        transaction_id="re_console",
        charge_transaction_id=charge.transaction_id,
        amount=1,
        currency=charge.currency,
        succeeded=True,
    )

    first, second = audit_run(), audit_run()

    expected = {
        (Kind.GATEWAY_CHARGE_REFUNDED_TWICE, f"gateway_charge:{charge.pk}"),
        (Kind.GATEWAY_REFUNDS_EXCEED_CHARGE, f"gateway_charge:{charge.pk}"),  # refunded in full already
        # Matched to the order by its charge: the gateway gave back more than our ledger says.
        (Kind.PAYMENT_LEDGER_MISMATCH, f"order:{order.pk}"),
        (Kind.CANCELLED_MONEY_HELD, f"order:{order.pk}"),
    }
    assert {(f.kind, f.key) for f in first.findings} == expected
    assert {(f.kind, f.key) for f in second.findings} == expected and second.resolved == 0


def test_an_incremental_run_catches_a_new_notice_announcing_a_refund_never_made(product, no_overlap, settings):
    settings.NOTIFY_UNCHARGED_CANCELLATIONS = True  # a shop that tells of declined cards too
    audit_run(full=True)
    order = scenarios.declined()
    Notification.objects.filter(order=order).update(body="We refunded 45.00 EUR.")

    report = audit_run()

    assert not report.full
    assert {(f.kind, f.key) for f in report.findings} == {(Kind.CANCELLATION_REFUND_UNMADE, f"order:{order.pk}")}


def test_a_full_run_resolves_violations_that_disappeared(product):
    StockLevel.objects.filter(product=product).update(on_hand=F("on_hand") + 1)
    audit_run(full=True)
    violation = Violation.objects.get()
    assert violation.kind == Kind.STOCK_MISMATCH and violation.is_open

    StockLevel.objects.filter(product=product).update(on_hand=F("on_hand") - 1)
    report = audit_run(full=True)

    violation.refresh_from_db()
    assert report.clean and report.resolved == 1
    assert violation.resolved_at == report.started_at


def test_an_incremental_run_checks_open_violations_again_and_resolves_the_repaired(product, no_overlap):
    order = scenarios.confirmed()
    audit_run(full=True)
    extra = Shipment.objects.create(order_id=order.pk, idempotency_key="planted", status="created")
    StockLevel.objects.filter(product=product).update(on_hand=F("on_hand") + 1)
    audit_run(full=True)
    assert Violation.objects.filter(resolved_at=None).count() == 2

    # Repaired in place: no watermark moves, yet the open violations are looked at again.
    Shipment.objects.filter(pk=extra.pk).update(status="cancelled")
    StockLevel.objects.filter(product=product).update(on_hand=F("on_hand") - 1)
    report = audit_run()

    assert not report.full and report.clean and report.resolved == 2
    assert not Violation.objects.filter(resolved_at=None).exists()


def test_a_violation_seen_again_keeps_its_row_and_moves_last_seen(product, no_overlap):
    StockLevel.objects.filter(product=product).update(on_hand=F("on_hand") + 1)
    first = audit_run(full=True)
    second = audit_run()

    violation = Violation.objects.get()
    assert (violation.first_seen, violation.last_seen) == (first.started_at, second.started_at)
    assert (first.opened, second.opened) == (1, 0)


def test_a_violation_that_comes_back_is_opened_again_with_a_new_first_seen(product):
    StockLevel.objects.filter(product=product).update(on_hand=F("on_hand") + 1)
    audit_run(full=True)
    StockLevel.objects.filter(product=product).update(on_hand=F("on_hand") - 1)
    audit_run(full=True)
    StockLevel.objects.filter(product=product).update(on_hand=F("on_hand") + 1)
    again = audit_run(full=True)

    violation = Violation.objects.get()
    assert violation.is_open and violation.first_seen == again.started_at and again.opened == 1


def test_a_full_sweep_runs_when_the_last_one_is_more_than_a_day_old(product, no_overlap):
    audit_run(full=True)
    assert not audit_run().full
    AuditRun.objects.update(started_at=F("started_at") - timedelta(hours=25))

    assert audit_run().full


def test_an_incremental_run_looks_again_at_what_changed_within_the_overlap(product, settings):
    settings.AUDIT_INCREMENTAL_OVERLAP_SECONDS = 300
    old, recent = scenarios.declined(), scenarios.declined()
    audit_run(full=True)
    # The old order and its rows were written long before; the recent one moments ago, as
    # far as a transaction still open during the last run might have left it unseen.
    ten_minutes_ago = timezone.now() - timedelta(minutes=10)
    Order.objects.filter(pk=old.pk).update(created_at=ten_minutes_ago, updated_at=ten_minutes_ago)
    SagaInstance.objects.filter(pk=old.saga_id).update(created_at=ten_minutes_ago, finished_at=ten_minutes_ago)
    GatewayCharge.objects.filter(idempotency_key__contains=str(old.saga_id)).update(created_at=ten_minutes_ago)
    Notification.objects.filter(order=old).update(sent_at=ten_minutes_ago)
    # Broken in place on both, leaving every change mark as it was.
    Order.objects.filter(pk__in=[old.pk, recent.pk]).update(status=Order.Status.CONFIRMED)

    report = audit_run()

    run = AuditRun.objects.latest("started_at")
    assert not report.full and report.checked_orders == 1
    assert [f.key for f in report.findings] == [f"order:{recent.pk}"]  # the old one waits for the full sweep
    assert (
        run.watermark["id_floors"]["gateway"]
        == GatewayCharge.objects.get(idempotency_key__contains=str(old.saga_id)).pk
    )
    assert run.watermark["id_floors"]["gateway"] < run.watermark["max_ids"]["gateway"]


def test_incremental_runs_check_every_product_from_the_stock_checkpoint(product, no_overlap):
    scenarios.confirmed(quantity=2)
    audit_run(full=True)
    assert StockCheckpoint.objects.get(product_id=product.pk).reserved == 2

    scenarios.confirmed(quantity=3)
    scenarios.address_rejected()
    stock_receive(product=product, quantity=5)
    assert audit_run().clean  # the checkpoint plus the movements since it agree with the level

    StockLevel.objects.filter(product=product).update(on_hand=F("on_hand") - 1)  # no change mark moves
    report = audit_run()

    assert not report.full
    assert [(f.kind, f.key) for f in report.findings] == [(Kind.STOCK_MISMATCH, f"product:{product.pk}")]
    checkpoint = StockCheckpoint.objects.get(product_id=product.pk)
    assert (checkpoint.receipts, checkpoint.reserved) == (15, 5)


def test_new_violations_are_logged_as_errors_with_kind_key_and_detail(product, caplog):
    StockLevel.objects.filter(product=product).update(on_hand=F("on_hand") + 1)
    with caplog.at_level(logging.ERROR, logger="audit.services"):
        audit_run(full=True)

    record = next(r for r in caplog.records if r.getMessage() == "consistency violation")
    assert record.levelno == logging.ERROR
    assert (record.kind, record.key) == (Kind.STOCK_MISMATCH, f"product:{product.pk}")
    assert "on hand 11 (receipts 10)" in record.detail


def test_each_run_is_recorded_with_its_watermark(product):
    scenarios.confirmed()
    report = audit_run(full=True)

    run = AuditRun.objects.get()
    assert (run.full, run.checked_orders, run.violations_found) == (True, 1, 0)
    assert run.started_at == report.started_at and run.finished_at >= run.started_at
    assert set(run.watermark["max_ids"]) == {
        "ledger",
        "payment",
        "gateway",
        "reservation",
        "movement",
        "shipment",
        "notification",
        "carrier",
    }
    assert run.watermark["max_ids"]["ledger"] > 0 and run.watermark["since"] is None


def test_a_run_is_skipped_while_another_holds_the_lock(product):
    other = psycopg.connect(database_url(connection.settings_dict), autocommit=True)
    try:
        other.execute("SELECT pg_advisory_lock(hashtext('audit.run'))")
        report = audit_run(wait=False)
    finally:
        other.close()

    assert report.skipped and not report.clean
    assert not AuditRun.objects.exists()


def test_the_beat_task_runs_the_audit_and_is_scheduled_every_30_seconds(product):
    scenarios.confirmed()

    assert audit_task() == {"skipped": False, "full": True, "violations": {}}
    task = PeriodicTask.objects.get(task="audit.run")
    assert task.enabled and (task.interval.every, task.interval.period) == (30, "seconds")
