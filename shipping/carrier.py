"""The carrier interface and a fake carrier with idempotency keys, like a real carrier API."""

import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from django.db import connection

from common.faults import fault_fires, injected_latency
from shipping.models import CarrierShipment

SERVED_COUNTRIES = frozenset(
    "AT BE BG CH CY CZ DE DK EE ES FI FR GB GR HR HU IE IS IT LI LT LU LV MT NL NO PL PT RO SE SI SK US CA".split()
)


@dataclass(frozen=True)
class CarrierResponse:
    accepted: bool
    reference: str
    tracking_number: str
    error: str = ""


class CarrierUnavailable(RuntimeError):
    pass


class Carrier(Protocol):
    def create_shipment(self, *, idempotency_key: str, address: dict[str, Any]) -> CarrierResponse: ...

    def cancel_shipment(self, *, idempotency_key: str) -> bool: ...

    def retrieve_shipment(self, *, idempotency_key: str) -> CarrierResponse | None: ...


class FakeCarrier:
    """Accepts addresses in the countries it serves; any other country is rejected (a
    business failure). Faults come from common.faults."""

    def create_shipment(self, *, idempotency_key: str, address: dict[str, Any]) -> CarrierResponse:
        injected_latency()
        if fault_fires("carrier_transient"):
            raise CarrierUnavailable("carrier answered 503")
        country = str(address.get("country", "")).upper()
        accepted = country in SERVED_COUNTRIES
        # One statement: a concurrent call with the same key finds the same entry.
        with connection.cursor() as cursor:
            cursor.execute(
                _CREATE_SQL,
                [
                    idempotency_key,
                    f"shp_{uuid.uuid4().hex[:20]}",
                    f"TRK{uuid.uuid4().int % 10**12:012d}" if accepted else "",
                    accepted,
                    "" if accepted else f"country not served: {country or '(none)'}",
                ],
            )
            row = cursor.fetchone()
        if row is not None:
            return CarrierResponse(*row)
        existing = CarrierShipment.objects.get(idempotency_key=idempotency_key)
        return CarrierResponse(existing.accepted, existing.reference, existing.tracking_number, existing.error)

    def cancel_shipment(self, *, idempotency_key: str) -> bool:
        injected_latency()
        if fault_fires("carrier_transient"):
            raise CarrierUnavailable("carrier answered 503")
        return CarrierShipment.objects.filter(idempotency_key=idempotency_key, accepted=True).update(cancelled=True) > 0

    def retrieve_shipment(self, *, idempotency_key: str) -> CarrierResponse | None:
        booked = CarrierShipment.objects.filter(idempotency_key=idempotency_key).first()
        if booked is None:
            return None
        return CarrierResponse(booked.accepted and not booked.cancelled, booked.reference, booked.tracking_number)


_CREATE_SQL = """
    INSERT INTO shipping_carriershipment (idempotency_key, reference, tracking_number, accepted, error, cancelled)
    VALUES (%s, %s, %s, %s, %s, false)
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING accepted, reference, tracking_number, error
"""


def get_carrier() -> Carrier:
    return FakeCarrier()
