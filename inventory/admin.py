"""Inventory in the admin. Stock moves only as StockMovement rows written by the services
(receipts, reservations, releases), so stock, reservations and movements are read only; a
product's name, price and availability can be edited."""

from django.contrib import admin

from common.admin import ReadOnlyAdmin, money_display
from inventory.models import Product, Reservation, ReservationLine, StockLevel, StockMovement


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ["sku", "name", "price", "active", "on_hand", "reserved"]
    price = money_display(amount="price_amount", description="price")
    list_filter = ["active", "currency"]
    search_fields = ["=sku", "name"]
    list_select_related = ["stock"]
    fields = ["sku", "name", "price_amount", "currency", "active"]

    def get_readonly_fields(self, request, obj=None):
        # The sku is the identity orders refer to; the currency must match prices already quoted.
        return ["sku", "currency"]

    def has_add_permission(self, request) -> bool:
        return False  # inventory.services.product_upsert creates the product with its stock level

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="on hand")
    def on_hand(self, obj: Product) -> int:
        return obj.stock.on_hand

    @admin.display(description="reserved")
    def reserved(self, obj: Product) -> int:
        return obj.stock.reserved


@admin.register(StockLevel)
class StockLevelAdmin(ReadOnlyAdmin):
    list_display = ["product", "on_hand", "reserved", "available", "updated_at"]
    list_select_related = ["product"]
    search_fields = ["=product__sku"]


class ReservationLineInline(admin.TabularInline):
    model = ReservationLine
    extra = 0
    can_delete = False
    fields = ["product", "quantity"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Reservation)
class ReservationAdmin(ReadOnlyAdmin):
    list_display = ["id", "order_id", "status", "idempotency_key", "created_at", "released_at"]
    list_filter = ["status"]
    search_fields = ["=order_id", "=idempotency_key"]
    ordering = ["-id"]
    show_full_result_count = False
    inlines = [ReservationLineInline]


@admin.register(StockMovement)
class StockMovementAdmin(ReadOnlyAdmin):
    list_display = ["id", "product", "kind", "quantity", "reservation", "idempotency_key", "created_at"]
    list_filter = ["kind"]
    list_select_related = ["product"]
    search_fields = ["=product__sku", "=reservation__order_id"]
    ordering = ["-id"]
    show_full_result_count = False
