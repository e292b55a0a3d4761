from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from outbox import selectors
from outbox.models import DeadLetter, InboxMessage, OutboxMessage

# Each replay is its own transaction inside the request: keep a selection to a page's worth.
REPLAY_LIMIT = 100


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

    @admin.action(description="Replay the selected dead letters…", permissions=["replay"])
    def replay(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> HttpResponse | None:
        """First a page asking for the reason (for the audit log), then one replay per dead
        letter, each with its own audit row: a refused one does not hold back the others."""
        from sagas.exceptions import SagaActionRefused
        from sagas.forms import BulkActionForm
        from sagas.operations import dead_letter_replay_by_operator

        total = queryset.count()
        if total > REPLAY_LIMIT:
            self.message_user(
                request, f"{total} dead letters selected; at most {REPLAY_LIMIT} at a time.", messages.ERROR
            )
            return None
        form = BulkActionForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            replayed, refused = 0, []
            for pk in queryset.order_by("pk").values_list("pk", flat=True):
                try:
                    reason = form.cleaned_data["reason"]
                    dead_letter_replay_by_operator(dead_letter_id=pk, actor=request.user, reason=reason)
                    replayed += 1
                except SagaActionRefused as exc:
                    refused.append(f"{pk}: {exc}")
            if replayed:
                self.message_user(request, f"{replayed} dead letter(s) replayed.", messages.SUCCESS)
            for line in refused:
                self.message_user(request, f"Not replayed — {line}", messages.ERROR)
            return None
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Replay {total} dead letter(s)",
            "form": form,
            "dead_letters": list(queryset.order_by("pk")),
            "selected": request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME),
            "select_across": request.POST.get("select_across", "0"),
        }
        return TemplateResponse(request, "admin/outbox/deadletter/replay_confirm.html", context)

    def has_replay_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("outbox.replay_deadletter")
