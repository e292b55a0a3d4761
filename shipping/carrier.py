"""The carrier interface and a fake carrier with idempotency keys, like a real carrier API."""

import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from django.db import IntegrityError, transaction

from config.faults import fault_fires, injected_latency
from outbox.exceptions import TransientError
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


class CarrierUnavailable(TransientError):
    pass


class Carrier(Protocol):
    def create_shipment(self, *, idempotency_key: str, address: dict[str, Any]) -> CarrierResponse: ...

    def cancel_shipment(self, *, idempotency_key: str) -> bool: ...


class FakeCarrier:
    """Accepts addresses in the countries it serves; any other country is rejected (a
    business failure). Faults come from config.faults."""

    def create_shipment(self, *, idempotency_key: str, address: dict[str, Any]) -> CarrierResponse:
        injected_latency()
        if fault_fires("carrier_transient"):
            raise CarrierUnavailable("carrier answered 503")
        existing = CarrierShipment.objects.filter(idempotency_key=idempotency_key).first()
        if existing is None:
            country = str(address.get("country", "")).upper()
            accepted = country in SERVED_COUNTRIES
            try:
                with transaction.atomic():
                    existing = CarrierShipment.objects.create(
                        idempotency_key=idempotency_key,
                        reference=f"shp_{uuid.uuid4().hex[:20]}",
                        tracking_number=f"TRK{uuid.uuid4().int % 10**12:012d}" if accepted else "",
                        accepted=accepted,
                        error="" if accepted else f"country not served: {country or '(none)'}",
                    )
            except IntegrityError:
                existing = CarrierShipment.objects.get(idempotency_key=idempotency_key)
        return CarrierResponse(existing.accepted, existing.reference, existing.tracking_number, existing.error)

    def cancel_shipment(self, *, idempotency_key: str) -> bool:
        injected_latency()
        if fault_fires("carrier_transient"):
            raise CarrierUnavailable("carrier answered 503")
        return CarrierShipment.objects.filter(idempotency_key=idempotency_key, accepted=True).update(cancelled=True) > 0


def get_carrier() -> Carrier:
    return FakeCarrier()
