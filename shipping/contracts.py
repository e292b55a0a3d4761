"""The messages of the shipping context: its commands, and the data of its replies."""

from dataclasses import dataclass
from typing import Any, ClassVar

from outbox.events import integration_event
from outbox.messages import Channel
from sagas.messages import SAGA_REPLY

CONSUMER = "shipping"


@dataclass(frozen=True)
class CreateShipment:
    channel: ClassVar[Channel] = Channel(CONSUMER, "create_shipment")
    order_id: int
    address: dict[str, Any]


@dataclass(frozen=True)
class CancelShipment:
    """Undo a shipment: ``shipment_key`` is the create step's key."""

    channel: ClassVar[Channel] = Channel(CONSUMER, "cancel_shipment")
    order_id: int
    shipment_key: str


@dataclass(frozen=True)
class CancelLateShipment:
    """Shipping's own command: cancel a booking that landed after its step was decided."""

    channel: ClassVar[Channel] = Channel(CONSUMER, "cancel_late_shipment")
    order_id: int
    shipment_key: str
    reference: str
    tracking_number: str


@dataclass(frozen=True)
class ShipmentCreated:
    channel: ClassVar[Channel] = SAGA_REPLY
    shipment_id: int
    tracking_number: str


@dataclass(frozen=True)
class ShipmentCancelled:
    channel: ClassVar[Channel] = SAGA_REPLY
    cancelled_shipment_id: int


# Integration events: facts for consumers outside the system (outbox.events), keyed by the order.


@integration_event(
    "shipment.created",
    1,
    example={
        "order_id": 1042,
        "saga_id": "4f6c1f9e-2d4b-4c1e-9a57-0d3e5b1c7a21",
        "shipment_id": 208,
        "tracking_number": "TRK5F2C9A1B",
        "country": "DE",
        "occurred_at": "2026-12-01T09:30:00.123456+00:00",
    },
)
@dataclass(frozen=True)
class ShipmentCreatedV1:
    """A shipment was booked with the carrier (or by an operator outside it) for an order."""

    order_id: int
    saga_id: str
    shipment_id: int
    tracking_number: str
    country: str
    occurred_at: str


@integration_event(
    "shipment.cancelled",
    1,
    example={
        "order_id": 1042,
        "saga_id": "4f6c1f9e-2d4b-4c1e-9a57-0d3e5b1c7a21",
        "shipment_id": 208,
        "occurred_at": "2026-12-01T09:30:00.123456+00:00",
    },
)
@dataclass(frozen=True)
class ShipmentCancelledV1:
    """A booked shipment was cancelled (the order's saga was compensated)."""

    order_id: int
    saga_id: str
    shipment_id: int
    occurred_at: str
