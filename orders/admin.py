"""Orders in the admin: read only. An order changes only through its saga (placing,
confirming, cancelling), never by editing a row."""

import uuid

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html
from rest_framework.authtoken.admin import TokenAdmin
from rest_framework.authtoken.models import TokenProxy

from common.admin import ReadOnlyAdmin, address_display, money_display
from orders.models import Notification, Order, OrderLine


class OrderLineInline(admin.TabularInline):
    model = OrderLine
    extra = 0
    can_delete = False
    fields = ["sku", "name", "quantity", "unit_price"]
    readonly_fields = fields
    unit_price = money_display(amount="unit_price_amount", description="unit price")

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class NotificationInline(admin.TabularInline):
    model = Notification
    extra = 0
    can_delete = False
    fields = ["kind", "recipient", "subject", "sent_at"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Order)
class OrderAdmin(ReadOnlyAdmin):
    list_display = ["id", "status", "customer_email", "total", "saga_link", "created_at"]
    fields = [
        "id",
        "status",
        "cancel_reason",
        "customer_name",
        "customer_email",
        "ship_to",
        "total",
        "client",
        "saga_link",
        "created_at",
        "updated_at",
    ]
    list_filter = ["status", "currency"]
    search_fields = ["=id", "=customer_email", "=saga_id"]
    ordering = ["-id"]
    show_full_result_count = False
    inlines = [OrderLineInline, NotificationInline]
    readonly_fields = fields
    total = money_display(amount="total_amount", description="total")
    ship_to = address_display(field="shipping_address")

    @admin.display(description="saga")
    def saga_link(self, obj: Order) -> str:
        url = reverse("admin:sagas_sagainstance_change", args=[obj.saga_id])
        return format_html('<a href="{}"><code>{}</code></a>', url, str(obj.saga_id)[:8])

    def get_search_results(self, request, queryset, search_term):
        """Exact matches only, each on an indexed column; a term that is not a valid id or
        uuid matches on the email alone instead of failing."""
        term = search_term.strip()
        if not term:
            return queryset, False
        if term.isdigit():
            return queryset.filter(pk=int(term)), False
        try:
            return queryset.filter(saga_id=uuid.UUID(term)), False
        except ValueError:
            return queryset.filter(customer_email=term), False


# DRF's token admin shows every key and creates tokens in the clear. Ours lists who has a token
# and revokes it, for superusers only (a token is a client's whole identity); tokens are stored
# hashed (orders.api.tokens) and issued by ``manage.py create_api_client``, which shows the key once.
if admin.site.is_registered(TokenProxy):
    admin.site.unregister(TokenProxy)


@admin.register(TokenProxy)
class ApiTokenAdmin(TokenAdmin):
    list_display = ("user", "created")
    fields = ("user", "created")
    readonly_fields = ("user", "created")

    def has_module_permission(self, request) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_view_permission(self, request, obj=None) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return request.user.is_active and request.user.is_superuser
