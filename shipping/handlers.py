"""Shipping's saga commands: create a shipment with the carrier, and cancel it."""

from dataclasses import dataclass
from typing import Any

from opentelemetry.trace import SpanKind

from config import tracing
from outbox.messages import Message
from sagas.messages import command_meta
from sagas.participant import saga_participant
from shipping.carrier import CarrierResponse, get_carrier
from shipping.models import Shipment
from shipping.services import carrier_key, shipment_cancel, shipment_record

CONSUMER = "shipping"


@dataclass(frozen=True)
class CreateShipment:
    order_id: int
    address: dict[str, Any]


@dataclass(frozen=True)
class CancelShipment:
    order_id: int
    shipment_key: str


def create_call(message: Message) -> CarrierResponse | None:
    command = message.parse(CreateShipment)
    key = command_meta(message).idempotency_key
    if Shipment.objects.filter(idempotency_key=key).exists():
        return None
    shipment_key = carrier_key(key)
    attributes = {"backoffice.carrier_key": shipment_key}
    with tracing.span("carrier create_shipment", kind=SpanKind.CLIENT, attributes=attributes):
        return get_carrier().create_shipment(idempotency_key=shipment_key, address=command.address)


def create(message: Message, response: CarrierResponse | None) -> dict[str, Any]:
    command = message.parse(CreateShipment)
    key = command_meta(message).idempotency_key
    if response is None:
        response = CarrierResponse(True, "", "")
    shipment = shipment_record(order_id=command.order_id, step_key=key, address=command.address, response=response)
    return {"shipment_id": shipment.pk, "tracking_number": shipment.tracking_number}


def cancel_call(message: Message) -> bool:
    command = message.parse(CancelShipment)
    key = carrier_key(command.shipment_key)
    with tracing.span("carrier cancel_shipment", kind=SpanKind.CLIENT, attributes={"backoffice.carrier_key": key}):
        return get_carrier().cancel_shipment(idempotency_key=key)


def cancel(message: Message, _: bool) -> dict[str, Any]:
    command = message.parse(CancelShipment)
    shipment = shipment_cancel(order_id=command.order_id, shipment_key=command.shipment_key)
    return {"cancelled_shipment_id": shipment.pk}


saga_participant(CONSUMER, "create_shipment", handle=create, prepare=create_call)
saga_participant(CONSUMER, "cancel_shipment", handle=cancel, prepare=cancel_call)
