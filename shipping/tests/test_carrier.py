"""The fake carrier keeps a real carrier's promises: one booking per idempotency key, an
address outside the countries it serves refused, a cancellation that can be asked again."""

import pytest

from common.faults import faults_clear, faults_set
from shipping.carrier import CarrierUnavailable, FakeCarrier
from shipping.models import CarrierShipment

pytestmark = pytest.mark.django_db

ADDRESS = {"line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE"}


@pytest.fixture
def carrier():
    return FakeCarrier()


@pytest.fixture
def no_faults_after():
    yield
    faults_clear()


def test_a_shipment_created_twice_with_the_same_key_is_booked_once(carrier):
    first = carrier.create_shipment(idempotency_key="ship:saga-1:create_shipment", address=ADDRESS)
    again = carrier.create_shipment(idempotency_key="ship:saga-1:create_shipment", address=ADDRESS)
    assert first.accepted and first.reference and first.tracking_number
    assert again == first
    assert CarrierShipment.objects.count() == 1


def test_an_address_in_a_country_not_served_is_refused_with_the_reason(carrier):
    refused = carrier.create_shipment(
        idempotency_key="ship:saga-1:create_shipment", address={**ADDRESS, "country": "JP"}
    )
    assert (refused.accepted, refused.tracking_number, refused.error) == (False, "", "country not served: JP")
    assert carrier.retrieve_shipment(idempotency_key="ship:saga-1:create_shipment").accepted is False


def test_a_cancellation_asked_twice_cancels_the_one_booking(carrier):
    booked = carrier.create_shipment(idempotency_key="ship:saga-1:create_shipment", address=ADDRESS)
    assert carrier.cancel_shipment(idempotency_key="ship:saga-1:create_shipment") is True
    assert carrier.cancel_shipment(idempotency_key="ship:saga-1:create_shipment") is True
    seen = carrier.retrieve_shipment(idempotency_key="ship:saga-1:create_shipment")
    assert (seen.accepted, seen.reference) == (False, booked.reference), "cancelled, still on the carrier's books"
    assert CarrierShipment.objects.get().cancelled


def test_cancelling_what_was_never_booked_finds_nothing(carrier):
    assert carrier.cancel_shipment(idempotency_key="ship:never-booked") is False
    carrier.create_shipment(idempotency_key="ship:refused", address={**ADDRESS, "country": "JP"})
    assert carrier.cancel_shipment(idempotency_key="ship:refused") is False


def test_a_503_books_nothing(carrier, no_faults_after):
    faults_set(carrier_transient=1.0)
    with pytest.raises(CarrierUnavailable):
        carrier.create_shipment(idempotency_key="ship:saga-1:create_shipment", address=ADDRESS)
    assert not CarrierShipment.objects.exists()
