"""The messaging layer's records in the admin, read-only; dead letters are the console's (console/admin.py)."""

from django.contrib import admin

from common.admin import ReadOnlyAdmin
from outbox import selectors
from outbox.models import InboxMessage, OutboxMessage


class PublishedFilter(admin.SimpleListFilter):
    title = "published"
    parameter_name = "published"

    def lookups(self, request, model_admin):
        return [("no", "unpublished (backlog)"), ("yes", "published")]

    def queryset(self, request, queryset):
        if self.value() == "no":
            return queryset.filter(published_at__isnull=True)
        if self.value() == "yes":
            return queryset.filter(published_at__isnull=False)
        return queryset


@admin.register(OutboxMessage)
class OutboxMessageAdmin(ReadOnlyAdmin):
    list_display = ["id", "type", "destination", "aggregate", "aggregate_id", "created_at", "published_at", "attempts"]
    list_filter = [PublishedFilter, "destination", "type"]
    search_fields = ["=message_id", "=correlation_id", "=causation_id", "=aggregate_id"]
    date_hierarchy = "created_at"
    show_full_result_count = False

    def changelist_view(self, request, extra_context=None):
        backlog = selectors.outbox_backlog()
        extra_context = {
            **(extra_context or {}),
            "title": (f"Outbox — backlog: {backlog.count} unpublished, oldest {backlog.oldest_age_seconds:.1f} s old"),
        }
        return super().changelist_view(request, extra_context)


@admin.register(InboxMessage)
class InboxMessageAdmin(ReadOnlyAdmin):
    list_display = ["id", "consumer", "type", "message_id", "correlation_id", "received_at"]
    list_filter = ["consumer", "type"]
    search_fields = ["=message_id", "=correlation_id"]
    show_full_result_count = False
