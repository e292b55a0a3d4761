"""The auditor's findings in the admin: read only, since only a new run may change them."""

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from audit.models import AuditRun, Violation
from common.admin import ReadOnlyAdmin


class ResolvedFilter(admin.SimpleListFilter):
    title = "resolved"
    parameter_name = "resolved"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("no", "open"), ("yes", "resolved")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "no":
            return queryset.filter(resolved_at__isnull=True)
        if self.value() == "yes":
            return queryset.filter(resolved_at__isnull=False)
        return queryset


@admin.register(Violation)
class ViolationAdmin(ReadOnlyAdmin):
    list_display = ["kind", "key", "detail", "first_seen", "last_seen", "resolved_at"]
    list_filter = [ResolvedFilter, "kind"]
    search_fields = ["=key", "detail"]
    ordering = ["resolved_at", "-last_seen"]
    date_hierarchy = "first_seen"
    show_full_result_count = False


@admin.register(AuditRun)
class AuditRunAdmin(ReadOnlyAdmin):
    list_display = ["started_at", "full", "checked_orders", "violations_found", "resolved", "duration"]
    list_filter = ["full"]
    ordering = ["-started_at"]
    show_full_result_count = False

    @admin.display(description="duration (s)")
    def duration(self, run: AuditRun) -> str:
        return f"{run.duration_seconds:.3f}"
