from typing import Any

from django.utils import timezone

from outbox.events import occurred, publish_event
from shipping.carrier import CarrierResponse
from shipping.contracts import ShipmentCancelledV1, ShipmentCreatedV1
from shipping.exceptions import AddressNotServed, ShipmentRefused
from shipping.models import Shipment


def carrier_key(step_key: str) -> str:
    """The carrier's idempotency key, derived from the step's."""
    return f"ship:{step_key}"


def shipment_record(
    *,
    order_id: int,
    step_key: str,
    address: dict[str, Any],
    response: CarrierResponse,
    saga_id: str | None = None,
    step: str = "",
) -> Shipment:
    """Record the carrier's booking once; a refused address is a business failure. ``saga_id``
    and ``step``: the saga step that ships (as on every shipment a step makes)."""
    existing = Shipment.objects.filter(idempotency_key=step_key).first()
    if existing is not None:
        if existing.status == Shipment.Status.CANCELLED and not existing.carrier_reference:
            raise ShipmentRefused("the shipment was cancelled by a compensation before it was created")
        return existing
    if not response.accepted:
        raise AddressNotServed(f"carrier rejected the address: {response.error}")
    shipment = Shipment.objects.create(
        order_id=order_id,
        idempotency_key=step_key,
        saga_id=saga_id,
        step=step,
        status=Shipment.Status.CREATED,
        carrier_reference=response.reference,
        tracking_number=response.tracking_number,
        address=address,
    )
    _announce_created(shipment)
    return shipment


def _announce_created(shipment: Shipment) -> None:
    publish_event(
        ShipmentCreatedV1(
            order_id=shipment.order_id,
            saga_id=str(shipment.saga_id or ""),
            shipment_id=shipment.pk,
            tracking_number=shipment.tracking_number,
            country=str((shipment.address or {}).get("country", "")).upper(),
            occurred_at=occurred(shipment.created_at),
        ),
        aggregate="order",
        aggregate_id=shipment.order_id,
    )


def shipment_record_by_hand(
    *,
    order_id: int,
    step_key: str,
    address: dict[str, Any],
    evidence: str,
    saga_id: str | None = None,
    step: str = "",
) -> Shipment:
    """Record a shipment an operator booked outside the carrier's interface. It has no carrier
    reference, so it cannot be cancelled through the interface either: a compensation of it
    escalates to an operator instead of reporting a cancellation that never happened."""
    shipment, created = Shipment.objects.get_or_create(
        idempotency_key=step_key,
        defaults={
            "order_id": order_id,
            "saga_id": saga_id,
            "step": step,
            "status": Shipment.Status.CREATED,
            "tracking_number": evidence[:100],
            "address": address,
        },
    )
    if created:
        _announce_created(shipment)
    return shipment


def shipment_record_late_cancel(*, order_id: int, shipment_key: str, reference: str, tracking_number: str) -> None:
    """A booking the carrier made after its step was compensated, now cancelled at the
    carrier: the compensation's tombstone learns the booking's reference, so our books say what
    the carrier's do. A step done by hand keeps its own record."""
    Shipment.objects.filter(
        idempotency_key=shipment_key, status=Shipment.Status.CANCELLED, carrier_reference=""
    ).update(carrier_reference=reference, tracking_number=tracking_number, updated_at=timezone.now())


def shipment_cancel(*, order_id: int, shipment_key: str, saga_id: str | None = None, step: str = "") -> Shipment:
    """Cancel keeps the row with a new status. With no shipment yet, leave a cancelled
    tombstone so that a late create command is refused."""
    shipment, created = Shipment.objects.select_for_update().get_or_create(
        idempotency_key=shipment_key,
        defaults={
            "order_id": order_id,
            "saga_id": saga_id,
            "step": step,
            "status": Shipment.Status.CANCELLED,
            "cancelled_at": timezone.now(),
        },
    )
    if not created and shipment.status == Shipment.Status.CREATED:
        shipment.status = Shipment.Status.CANCELLED
        shipment.cancelled_at = timezone.now()
        shipment.updated_at = timezone.now()
        shipment.save(update_fields=["status", "cancelled_at", "updated_at"])
        publish_event(
            ShipmentCancelledV1(
                order_id=shipment.order_id,
                saga_id=str(shipment.saga_id or saga_id or ""),
                shipment_id=shipment.pk,
                occurred_at=occurred(shipment.cancelled_at),
            ),
            aggregate="order",
            aggregate_id=shipment.order_id,
        )
    return shipment
