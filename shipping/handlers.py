"""Shipping's saga commands: create a shipment with the carrier, and cancel it."""

from opentelemetry.trace import SpanKind

from common import tracing
from outbox.consumer import register
from outbox.messages import Message
from outbox.publishing import publish
from sagas.messages import command_meta
from sagas.outcomes import Decision, OutcomeBook, OutcomeRecord
from sagas.participant import saga_participant
from shipping.carrier import CarrierResponse, get_carrier
from shipping.contracts import CancelLateShipment, CancelShipment, CreateShipment, ShipmentCancelled, ShipmentCreated
from shipping.exceptions import ShipmentRefused
from shipping.models import Shipment, StepOutcome
from shipping.services import (
    carrier_key,
    shipment_cancel,
    shipment_record,
    shipment_record_by_hand,
    shipment_record_late_cancel,
)

BOOK = OutcomeBook(StepOutcome)


def create_call(message: Message) -> CarrierResponse | None:
    command = message.parse(CreateShipment)
    key = command_meta(message).idempotency_key
    if Shipment.objects.filter(idempotency_key=key).exists():
        return None
    shipment_key = carrier_key(key)
    attributes = {"backoffice.carrier_key": shipment_key}
    with tracing.span("carrier create_shipment", kind=SpanKind.CLIENT, attributes=attributes):
        return get_carrier().create_shipment(idempotency_key=shipment_key, address=command.address)


def create(message: Message, response: CarrierResponse | None) -> ShipmentCreated:
    command = message.parse(CreateShipment)
    key = command_meta(message).idempotency_key
    if response is None:
        response = CarrierResponse(True, "", "")
    meta = command_meta(message)
    shipment = shipment_record(
        order_id=command.order_id,
        step_key=key,
        address=command.address,
        response=response,
        saga_id=meta.saga_id,
        step=meta.step,
    )
    return ShipmentCreated(shipment_id=shipment.pk, tracking_number=shipment.tracking_number)


def create_by_hand(message: Message, evidence: str) -> ShipmentCreated:
    command = message.parse(CreateShipment)
    shipment = shipment_record_by_hand(
        order_id=command.order_id,
        step_key=command_meta(message).idempotency_key,
        address=command.address,
        evidence=evidence,
        saga_id=command_meta(message).saga_id,
        step=command_meta(message).step,
    )
    return ShipmentCreated(shipment_id=shipment.pk, tracking_number=shipment.tracking_number)


def create_found(message: Message) -> CarrierResponse | None:
    """The carrier's live booking under this step's key, if an earlier copy's call made one."""
    return get_carrier().retrieve_shipment(idempotency_key=carrier_key(command_meta(message).idempotency_key))


def create_landed_late(message: Message, response: CarrierResponse | None, record: OutcomeRecord) -> None:
    """The carrier booked this copy's shipment after the step was compensated or done by hand:
    cancel that booking, through a command of our own, so that no parcel leaves for an order
    that no longer wants it (or twice)."""
    if response is None or not response.accepted or record.outcome not in (Decision.COMPENSATED, Decision.MANUAL):
        return
    command = message.parse(CreateShipment)
    publish(
        type=CancelLateShipment.channel.type,
        destination=CancelLateShipment.channel.destination,
        aggregate="shipment",
        aggregate_id=command_meta(message).idempotency_key,
        payload=CancelLateShipment(
            order_id=command.order_id,
            shipment_key=command_meta(message).idempotency_key,
            reference=response.reference,
            tracking_number=response.tracking_number,
        ),
    )


def cancel_call(message: Message) -> bool:
    command = message.parse(CancelShipment)
    key = carrier_key(command.shipment_key)
    with tracing.span("carrier cancel_shipment", kind=SpanKind.CLIENT, attributes={"backoffice.carrier_key": key}):
        return get_carrier().cancel_shipment(idempotency_key=key)


def cancel(message: Message, cancelled_at_carrier: bool) -> ShipmentCancelled:
    command = message.parse(CancelShipment)
    shipment = Shipment.objects.filter(idempotency_key=command.shipment_key).first()
    if shipment is not None and shipment.status == Shipment.Status.CREATED:
        if not shipment.carrier_reference:
            raise ShipmentRefused(
                "the shipment was booked by hand, outside the carrier's interface: cancel it by hand with the carrier"
            )
        if not cancelled_at_carrier:
            # Booked at the carrier after our cancel call found nothing there: deliver again,
            # so that the booking is cancelled before our books say so.
            raise RuntimeError("the shipment was booked while it was being cancelled; cancelling again")
    meta = command_meta(message)
    shipment = shipment_cancel(
        order_id=command.order_id, shipment_key=command.shipment_key, saga_id=meta.saga_id, step=meta.step
    )
    return ShipmentCancelled(cancelled_shipment_id=shipment.pk)


def cancel_by_hand(message: Message, evidence: str) -> ShipmentCancelled:
    command = message.parse(CancelShipment)
    meta = command_meta(message)
    shipment = shipment_cancel(
        order_id=command.order_id, shipment_key=command.shipment_key, saga_id=meta.saga_id, step=meta.step
    )
    return ShipmentCancelled(cancelled_shipment_id=shipment.pk)


def cancel_late_call(message: Message) -> bool:
    command = message.parse(CancelLateShipment)
    key = carrier_key(command.shipment_key)
    with tracing.span("carrier cancel_shipment", kind=SpanKind.CLIENT, attributes={"backoffice.carrier_key": key}):
        return get_carrier().cancel_shipment(idempotency_key=key)


def cancel_late(message: Message, _: bool) -> None:
    command = message.parse(CancelLateShipment)
    shipment_record_late_cancel(
        order_id=command.order_id,
        shipment_key=command.shipment_key,
        reference=command.reference,
        tracking_number=command.tracking_number,
    )


saga_participant(
    CreateShipment.channel,
    handle=create,
    prepare=create_call,
    book=BOOK,
    manual=create_by_hand,
    late_effect=create_landed_late,
    find_effect=create_found,
    business_failures=(ShipmentRefused,),
)
saga_participant(
    CancelShipment.channel,
    handle=cancel,
    prepare=cancel_call,
    book=BOOK,
    manual=cancel_by_hand,
    business_failures=(ShipmentRefused,),
)
register(*CancelLateShipment.channel, handle=cancel_late, prepare=cancel_late_call)
