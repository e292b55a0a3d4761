"""The auditor's findings in the admin: read only, since only a new run may change them."""

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.http import urlencode

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
    list_display = ["kind", "about", "detail", "first_seen", "last_seen", "acknowledged_by", "resolved_at", "act"]
    list_filter = [ResolvedFilter, "kind"]
    search_fields = ["=key", "detail"]
    ordering = ["resolved_at", "-last_seen"]
    date_hierarchy = "first_seen"
    show_full_result_count = False

    @admin.display(description="about", ordering="key")
    def about(self, violation: Violation) -> str:
        """The key, linked to its saga through the console's search (which lands on it)."""
        if not violation.console_target:
            return violation.key
        url = f"{reverse('admin:sagas_sagainstance_changelist')}?{urlencode({'q': violation.console_target})}"
        return format_html('<a href="{}">{}</a>', url, violation.key)

    @admin.display(description="")
    def act(self, violation: Violation) -> str:
        """The console's acknowledge and resolve pages (they check the permissions)."""
        if not violation.is_open:
            return ""
        return format_html(
            '<a href="{}">acknowledge</a> · <a href="{}">resolve</a>',
            reverse("admin:sagas_violation_action", args=[violation.pk, "acknowledge_violation"]),
            reverse("admin:sagas_violation_action", args=[violation.pk, "resolve_violation"]),
        )


@admin.register(AuditRun)
class AuditRunAdmin(ReadOnlyAdmin):
    list_display = ["started_at", "full", "checked_orders", "violations_found", "resolved", "duration"]
    list_filter = ["full"]
    ordering = ["-started_at"]
    show_full_result_count = False

    @admin.display(description="duration (s)")
    def duration(self, run: AuditRun) -> str:
        return f"{run.duration_seconds:.3f}"
