"""Shipments in the admin: read only. A shipment is created and cancelled by the saga's
steps, and keeps its row when cancelled."""

from django.contrib import admin

from common.admin import ReadOnlyAdmin, address_display
from shipping.models import CarrierShipment, Shipment


@admin.register(Shipment)
class ShipmentAdmin(ReadOnlyAdmin):
    list_display = ["id", "order_id", "status", "carrier_reference", "tracking_number", "created_at", "cancelled_at"]
    list_filter = ["status"]
    search_fields = ["=order_id", "=idempotency_key", "=tracking_number"]
    exclude = ["address"]
    readonly_fields = ["ship_to"]
    ship_to = address_display(field="address")
    ordering = ["-id"]
    show_full_result_count = False


@admin.register(CarrierShipment)
class CarrierShipmentAdmin(ReadOnlyAdmin):
    """The fake carrier's own books, standing in for the carrier's console."""

    list_display = ["id", "reference", "idempotency_key", "tracking_number", "accepted", "cancelled", "created_at"]
    list_filter = ["accepted", "cancelled"]
    search_fields = ["=idempotency_key", "=reference"]
    ordering = ["-id"]
    show_full_result_count = False
