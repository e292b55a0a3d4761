"""Payments in the admin: read only. The ledger is append-only (a database trigger refuses
changes), and a payment's status moves only through the saga's charge and refund steps."""

from django.contrib import admin

from common.admin import ReadOnlyAdmin, money_display
from payments.models import GatewayCharge, LedgerEntry, Payment


class LedgerEntryInline(admin.TabularInline):
    model = LedgerEntry
    extra = 0
    can_delete = False
    fields = ["kind", "money", "idempotency_key", "provider_reference", "created_at"]
    readonly_fields = fields
    money = money_display()

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Payment)
class PaymentAdmin(ReadOnlyAdmin):
    list_display = ["id", "order_id", "status", "money", "provider_charge_id", "created_at"]
    money = money_display()
    list_filter = ["status"]
    search_fields = ["=order_id", "=idempotency_key", "=provider_charge_id"]
    ordering = ["-id"]
    show_full_result_count = False
    inlines = [LedgerEntryInline]


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "order_id",
        "kind",
        "money",
        "idempotency_key",
        "provider_reference",
        "created_at",
    ]
    list_filter = ["kind"]
    money = money_display()
    search_fields = ["=order_id", "=idempotency_key", "=provider_reference"]
    ordering = ["-id"]
    show_full_result_count = False


@admin.register(GatewayCharge)
class GatewayChargeAdmin(ReadOnlyAdmin):
    """The fake gateway's own books, standing in for the provider's console."""

    list_display = ["id", "kind", "idempotency_key", "transaction_id", "money", "succeeded", "created_at"]
    money = money_display()
    list_filter = ["kind", "succeeded"]
    search_fields = ["=idempotency_key", "=transaction_id"]
    ordering = ["-id"]
    show_full_result_count = False
