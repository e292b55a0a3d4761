from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from outbox import selectors, services
from outbox.models import DeadLetter, InboxMessage, OutboxMessage


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


class ReadOnlyAdmin(admin.ModelAdmin):
    """Messages are evidence: operators read and replay them, never edit or delete them."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


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


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnlyAdmin):
    list_display = ["id", "consumer", "type", "status", "poison", "attempts", "reason_short", "created_at"]
    list_filter = ["status", "poison", "consumer", "type"]
    search_fields = ["=message_id", "=correlation_id", "reason"]
    actions = ["replay"]

    @admin.display(description="reason")
    def reason_short(self, obj: DeadLetter) -> str:
        return obj.reason[:120]

    @admin.action(description="Replay the selected dead letters", permissions=["replay"])
    def replay(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> None:
        from sagas.audit import audit_record

        replayed, refused = 0, []
        for dead_letter in queryset:
            try:
                services.dead_letter_replay(dead_letter=dead_letter)
                replayed += 1
                audit_record(
                    actor=request.user,
                    action="replay_dead_letter",
                    saga_id=None,
                    reason=f"dead letter {dead_letter.pk} replayed from the admin",
                    outcome="replayed",
                    target=f"deadletter:{dead_letter.pk}",
                )
            except services.ReplayRefused as exc:
                refused.append(f"{dead_letter.pk}: {exc}")
        if replayed:
            self.message_user(request, f"{replayed} dead letter(s) replayed.", messages.SUCCESS)
        for line in refused:
            self.message_user(request, f"Not replayed — {line}", messages.ERROR)

    def has_replay_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("outbox.replay_deadletter")
