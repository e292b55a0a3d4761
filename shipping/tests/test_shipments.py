"""What the shipping context records: one shipment per step key, none for an address the
carrier refuses, and a cancellation that keeps the row (and refuses a late booking)."""

import pytest

from shipping.carrier import FakeCarrier
from shipping.exceptions import AddressNotServed, ShipmentRefused
from shipping.models import Shipment
from shipping.services import carrier_key, shipment_cancel, shipment_record

pytestmark = pytest.mark.django_db

ORDER_ID = 7001
STEP_KEY = "saga-1:create_shipment"
ADDRESS = {"line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE"}


def _book(address: dict = ADDRESS):
    return FakeCarrier().create_shipment(idempotency_key=carrier_key(STEP_KEY), address=address)


def test_a_shipment_recorded_twice_is_one_shipment_with_the_carriers_tracking_number():
    booking = _book()
    first = shipment_record(order_id=ORDER_ID, step_key=STEP_KEY, address=ADDRESS, response=booking)
    again = shipment_record(order_id=ORDER_ID, step_key=STEP_KEY, address=ADDRESS, response=booking)
    assert again.pk == first.pk
    shipment = Shipment.objects.get(order_id=ORDER_ID)
    assert (shipment.status, shipment.carrier_reference, shipment.tracking_number) == (
        Shipment.Status.CREATED,
        booking.reference,
        booking.tracking_number,
    )


def test_an_address_the_carrier_does_not_serve_is_a_business_failure_that_ships_nothing():
    refused = _book({**ADDRESS, "country": "JP"})
    with pytest.raises(AddressNotServed, match="country not served: JP"):
        shipment_record(order_id=ORDER_ID, step_key=STEP_KEY, address=ADDRESS, response=refused)
    assert not Shipment.objects.exists()


def test_a_cancelled_shipment_keeps_its_row_and_cancelling_again_changes_nothing():
    booking = _book()
    shipment_record(order_id=ORDER_ID, step_key=STEP_KEY, address=ADDRESS, response=booking)
    cancelled = shipment_cancel(order_id=ORDER_ID, shipment_key=STEP_KEY)
    cancelled_at = cancelled.cancelled_at
    again = shipment_cancel(order_id=ORDER_ID, shipment_key=STEP_KEY)
    assert again.pk == cancelled.pk and again.cancelled_at == cancelled_at
    shipment = Shipment.objects.get(order_id=ORDER_ID)
    assert (shipment.status, shipment.carrier_reference) == (Shipment.Status.CANCELLED, booking.reference)


def test_a_cancellation_before_the_shipment_refuses_the_late_booking():
    shipment_cancel(order_id=ORDER_ID, shipment_key=STEP_KEY)
    with pytest.raises(ShipmentRefused, match="cancelled by a compensation"):
        shipment_record(order_id=ORDER_ID, step_key=STEP_KEY, address=ADDRESS, response=_book())
    shipment = Shipment.objects.get(idempotency_key=STEP_KEY)
    assert (shipment.status, shipment.carrier_reference) == (Shipment.Status.CANCELLED, "")
