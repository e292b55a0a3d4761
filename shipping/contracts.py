"""The messages of the shipping context: its commands, and the data of its replies."""

from dataclasses import dataclass
from typing import Any, ClassVar

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
