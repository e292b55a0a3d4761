"""Reads of the shipping context, for the storefront API, the dashboard and the auditor."""

from sagas.selectors import KeyRecord
from shipping.models import CarrierShipment, Shipment
from shipping.services import carrier_key


def shipment_of_order(*, order_id: int) -> Shipment | None:
    """The order's latest shipment. A cancelled one keeps its row, so it is still shown."""
    return Shipment.objects.filter(order_id=order_id).order_by("-id").first()


def shipments_of_order(*, order_id: int) -> list[Shipment]:
    return list(Shipment.objects.filter(order_id=order_id).order_by("id"))


def saga_ids_of_tracking_number(*, tracking_number: str, limit: int) -> list:
    """The sagas whose shipment carries this tracking number (indexed)."""
    return list(
        Shipment.objects.filter(tracking_number=tracking_number.strip(), saga_id__isnull=False)
        .values_list("saga_id", flat=True)
        .distinct()[:limit]
    )


def records_of_step_keys(step_keys: list[str]) -> list[KeyRecord]:
    """What the steps' keys led to here: shipments, and the carrier's (whose keys are
    derived from the step's, see ``carrier_key``)."""
    records = [
        KeyRecord(shipment.idempotency_key, "shipment", shipment.idempotency_key, f"#{shipment.pk} {shipment.status}")
        for shipment in Shipment.objects.filter(idempotency_key__in=step_keys).order_by("id")
    ]
    by_carrier_key = {carrier_key(key): key for key in step_keys}
    for carrier in CarrierShipment.objects.filter(idempotency_key__in=list(by_carrier_key)).order_by("id"):
        state = "cancelled" if carrier.cancelled else ("accepted" if carrier.accepted else f"rejected: {carrier.error}")
        records.append(
            KeyRecord(
                by_carrier_key[carrier.idempotency_key],
                "carrier shipment",
                carrier.idempotency_key,
                f"{carrier.reference} ({state})",
            )
        )
    return records
