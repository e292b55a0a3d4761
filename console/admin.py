"""The operators' console in the admin: the saga list with bulk repairs, the saga page with
its timeline and actions, the dashboard, and the audit log.

Sagas are never edited through forms: every change goes through a service in
console.operations, behind a permission per action and a confirmation with a reason.
"""

from collections import Counter
from collections.abc import Callable
from functools import partial
from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme, urlencode

from common.admin import ReadOnlyAdmin, money_display
from common.formatting import utc_format
from console import operations, selectors
from console.alert_delivery import alert_failures
from console.approval_views import approval_view
from console.approvals import approvals_pending
from console.attention import needs_attention
from console.audit import audit_refusal
from console.bulk_repairs import ACTIVE as BULK_ACTIVE
from console.bulk_repairs import bulk_repair_create, bulk_repair_progress, bulk_repair_stop
from console.charts import bar_chart, line_chart
from console.forms import BulkActionForm, BulkRepairForm, DeadLetterReplayForm, MarkStepDoneForm, OperatorActionForm
from console.four_eyes import ApprovalRequested
from console.models import AlertDelivery, ApprovalRequest, AuditLog, BulkRepair, Incident
from console.operations import (
    ACTION_LABELS,
    ACTION_PERMISSIONS,
    DISCARD_PERMISSION,
    REPLAY_PERMISSION,
    SagaAction,
)
from console.refusals import permission_refusal, refuse_forged_action
from console.search import saga_search
from console.selectors import DeadLetterMark
from console.violation_views import violation_action_view
from console.violations import VIOLATION_PERMISSIONS
from outbox.models import DeadLetter
from sagas.definition import registered_definitions
from sagas.exceptions import SagaActionRefused
from sagas.models import SagaInstance
from sagas.selectors import ATTENTION_KINDS, saga_attention_condition

# Refresh period of the dashboard (it fetches its panels again, no full reload).
DASHBOARD_REFRESH_SECONDS = 5
# A bulk repair freezes its sagas on the confirmation page; past this many the operator is
# asked to narrow the selection (e.g. filter by step) and run it again.
BULK_LIMIT = 500
# Refresh period of a bulk repair's progress page while it runs.
BULK_REFRESH_SECONDS = 2

SERVICES: dict[str, Callable[..., SagaInstance]] = {
    SagaAction.RETRY_STEP: operations.saga_retry_step,
    SagaAction.COMPENSATE: operations.saga_compensate,
    SagaAction.RETRY_COMPENSATION: operations.saga_retry_compensation,
    SagaAction.MARK_STEP_DONE: operations.saga_mark_step_done,
}


class DefinitionFilter(admin.SimpleListFilter):
    """Lookups from the registered definitions, not a DISTINCT over every saga."""

    title = "definition"
    parameter_name = "definition"

    def lookups(self, request, model_admin):
        names = sorted({definition.name for definition in registered_definitions()})
        return [(name, name) for name in names]

    def queryset(self, request, queryset):
        return queryset.filter(definition_name=self.value()) if self.value() else queryset


class AttentionFilter(admin.SimpleListFilter):
    """The lists the "needs attention" view counts: its counts link here."""

    title = "needs attention"
    parameter_name = "attention"

    def lookups(self, request, model_admin):
        return list(ATTENTION_KINDS.items())

    def queryset(self, request, queryset):
        if self.value() not in ATTENTION_KINDS:
            return queryset
        return queryset.filter(saga_attention_condition(kind=self.value(), now=timezone.now()))


class CurrentStepFilter(admin.SimpleListFilter):
    title = "current step"
    parameter_name = "step"

    def lookups(self, request, model_admin):
        names: list[str] = []
        for definition in registered_definitions():
            names += [step.name for step in definition.steps if step.name not in names]
        return [(name, name) for name in names]

    def queryset(self, request, queryset):
        return queryset.filter(current_step=self.value()) if self.value() else queryset


@admin.register(SagaInstance)
class SagaInstanceAdmin(admin.ModelAdmin):
    # Seven narrow columns: the list fits a 1366 px screen beside its filters.
    list_display = [
        "saga_link",
        "state_badge",
        "stuck_flag",
        "step_attempt",
        "aggregate_link",
        "created",
        "finished",
    ]
    list_display_links = None
    # Choices and booleans need no query; the definition and step filters read the registry.
    list_filter = [AttentionFilter, "state", "stuck", DefinitionFilter, CurrentStepFilter]
    search_fields = ["aggregate_id"]
    search_help_text = (
        "An order id, saga id, customer email (or part of it), payment or refund reference, tracking number,"
        " idempotency key or message id."
    )
    ordering = ["-created_at"]
    list_per_page = 50
    show_full_result_count = False
    actions = ["retry_selected", "compensate_selected", "retry_compensation_selected"]
    change_list_template = "admin/sagas/sagainstance/change_list.html"

    # The permission each bulk action's declared permission stands for.
    action_permissions = {
        "retry": ACTION_PERMISSIONS[SagaAction.RETRY_STEP],
        "compensate": ACTION_PERMISSIONS[SagaAction.COMPENSATE],
        "retry_compensation": ACTION_PERMISSIONS[SagaAction.RETRY_COMPENSATION],
    }

    # -- read only ---------------------------------------------------------

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(ACTION_PERMISSIONS[SagaAction.RETRY_STEP])

    def has_compensate_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(ACTION_PERMISSIONS[SagaAction.COMPENSATE])

    def has_retry_compensation_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(ACTION_PERMISSIONS[SagaAction.RETRY_COMPENSATION])

    # -- the list ----------------------------------------------------------

    @admin.display(description="saga", ordering="id")
    def saga_link(self, obj: SagaInstance) -> str:
        url = reverse("admin:sagas_sagainstance_change", args=[obj.pk])
        return format_html('<a href="{}"><code>{}</code></a>', url, str(obj.pk)[:8])

    @admin.display(description="state", ordering="state")
    def state_badge(self, obj: SagaInstance) -> str:
        return format_html('<span class="saga-state saga-{}">{}</span>', obj.state, obj.state)

    @admin.display(description="stuck", ordering="stuck")
    def stuck_flag(self, obj: SagaInstance) -> str:
        # A warning, never the admin's green check: stuck is bad news.
        if not obj.stuck:
            return ""
        return format_html('<span class="saga-state saga-stuck" title="{}">⚠ stuck</span>', obj.stuck_reason)

    @admin.display(description="step", ordering="current_step")
    def step_attempt(self, obj: SagaInstance) -> str:
        if not obj.current_step:
            return "-"
        return format_html('{} <span class="ops-muted">#{}</span>', obj.current_step, obj.attempt)

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: SagaInstance) -> str:
        return utc_format(obj.created_at)

    @admin.display(description="finished", ordering="finished_at")
    def finished(self, obj: SagaInstance) -> str:
        return utc_format(obj.finished_at)

    @admin.display(description="aggregate", ordering="aggregate_id")
    def aggregate_link(self, obj: SagaInstance) -> str:
        if obj.aggregate == "order":
            url = reverse("admin:orders_order_change", args=[obj.aggregate_id])
            return format_html('<a href="{}">order {}</a>', url, obj.aggregate_id)
        return f"{obj.aggregate} {obj.aggregate_id}"

    def get_search_results(self, request, queryset, search_term):
        """The console's one search (console.search): every kind of term, each by an index."""
        if not search_term.strip():
            return queryset, False
        return queryset.filter(pk__in=self._search(request, search_term).saga_ids), False

    def _search(self, request: HttpRequest, term: str):
        cached = getattr(request, "_console_search", None)
        if cached is None or cached.term != term.strip():
            cached = saga_search(term=term)
            request._console_search = cached
        return cached

    def changelist_view(self, request: HttpRequest, extra_context=None):
        """A search that finds exactly one saga lands on its page; a bulk action the operator
        may not run is refused visibly and audited, never silently dropped."""
        if request.method == "POST" and "action" in request.POST:
            refuse_forged_action(self, request, permissions=self.action_permissions, saga_of=_single_saga)
        term = request.GET.get("q", "").strip()
        if request.method == "GET" and term:
            found = self._search(request, term)
            if found.single is not None:
                return HttpResponseRedirect(reverse("admin:sagas_sagainstance_change", args=[found.single]))
        extra_context = {**(extra_context or {}), "search_result": self._search(request, term) if term else None}
        return super().changelist_view(request, extra_context=extra_context)

    # -- bulk actions ------------------------------------------------------

    @admin.action(description="Retry the current step of the selected sagas", permissions=["retry"])
    def retry_selected(self, request: HttpRequest, queryset: QuerySet[SagaInstance]) -> HttpResponse | None:
        return self._bulk(request, queryset, SagaAction.RETRY_STEP, "retry_selected")

    @admin.action(description="Compensate the selected sagas", permissions=["compensate"])
    def compensate_selected(self, request: HttpRequest, queryset: QuerySet[SagaInstance]) -> HttpResponse | None:
        return self._bulk(request, queryset, SagaAction.COMPENSATE, "compensate_selected")

    @admin.action(description="Retry the failed compensation of the selected sagas", permissions=["retry_compensation"])
    def retry_compensation_selected(
        self, request: HttpRequest, queryset: QuerySet[SagaInstance]
    ) -> HttpResponse | None:
        return self._bulk(request, queryset, SagaAction.RETRY_COMPENSATION, "retry_compensation_selected")

    def _bulk(
        self, request: HttpRequest, queryset: QuerySet[SagaInstance], action: str, action_name: str
    ) -> HttpResponse | None:
        """First a confirmation page asking for the reason and the rate, which freezes the
        selection (the exact saga ids, posted back); on confirmation a bulk repair is recorded
        and run by beat, a canary first (console.bulk_repairs), and the operator watches its
        progress page."""
        total = queryset.count()
        if total > BULK_LIMIT:
            self.message_user(
                request,
                f"{total} sagas selected; at most {BULK_LIMIT} at a time. Narrow the selection (e.g. by step).",
                messages.ERROR,
            )
            return None
        form = BulkRepairForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            saga_ids = list(queryset.order_by("pk").values_list("pk", flat=True))
            repair = bulk_repair_create(
                actor=request.user,
                action=action,
                reason=form.cleaned_data["reason"],
                saga_ids=saga_ids,
                rate_per_minute=form.cleaned_data["rate_per_minute"],
            )
            self.message_user(
                request,
                f"{ACTION_LABELS[action]}: {len(saga_ids)} saga(s) frozen in bulk repair {repair.pk}; the canary goes"
                " first, the rest when it succeeds.",
                messages.SUCCESS,
            )
            return HttpResponseRedirect(reverse("admin:sagas_bulk_repair", args=[repair.pk]))
        states = Counter(queryset.values_list("state", flat=True))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"{ACTION_LABELS[action]}: {total} saga(s)",
            "form": form,
            "action_name": action_name,
            "label": ACTION_LABELS[action],
            "total": total,
            "states": sorted(states.items()),
            "sample": list(queryset.only("id", "state", "current_step", "stuck", "stuck_reason")[:20]),
            # The selection is frozen here: the exact sagas shown are posted back, never "every
            # saga of the filter", which could have grown by the time the operator confirms.
            "selected": [str(pk) for pk in queryset.order_by("pk").values_list("pk", flat=True)],
            "select_across": "0",
        }
        return TemplateResponse(request, "admin/sagas/sagainstance/bulk_confirm.html", context)

    def bulk_repair_view(self, request: HttpRequest, repair_id: int) -> HttpResponse:
        """A bulk repair's progress: each saga's outcome as it happens, refreshed by a small
        fetch of the fragment (?fragment=1) while the repair runs."""
        self._require_view(request)
        try:
            progress = bulk_repair_progress(repair_id=repair_id)
        except BulkRepair.DoesNotExist:
            raise Http404("no such bulk repair") from None
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Bulk repair {repair_id}: {ACTION_LABELS.get(progress.repair.action, progress.repair.action)}",
            "p": progress,
            "refresh_seconds": BULK_REFRESH_SECONDS,
            "can_stop": progress.repair.status in BULK_ACTIVE
            and request.user.has_perm(ACTION_PERMISSIONS[progress.repair.action]),
            "stop_form": BulkActionForm(),
        }
        template = "admin/sagas/_bulk_repair_progress.html" if request.GET.get("fragment") else None
        return TemplateResponse(request, template or "admin/sagas/bulk_repair.html", context)

    def bulk_repair_stop_view(self, request: HttpRequest, repair_id: int) -> HttpResponse:
        """Stop a bulk repair: the sagas not sent yet are not run. Needs the permission of the
        repair's action; a refusal is audited."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        self._require_view(request)
        repair = get_object_or_404(BulkRepair, pk=repair_id)
        permission = ACTION_PERMISSIONS[repair.action]
        reason = request.POST.get("reason", "")
        if not request.user.has_perm(permission):
            audit_refusal(
                actor=request.user,
                action=f"bulk_{repair.action}",
                saga_id=None,
                target=f"bulk repair {repair.pk}",
                reason=reason,
                outcome=f"refused: permission denied (needs {permission}) to stop it",
            )
            raise PermissionDenied(permission_refusal(permission))
        try:
            repair = bulk_repair_stop(repair_id=repair.pk, actor=request.user, reason=reason)
        except SagaActionRefused as exc:
            self.message_user(request, f"Not stopped — {exc}", messages.ERROR)
        else:
            self.message_user(request, f"Bulk repair {repair.pk} {repair.status_detail}.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:sagas_bulk_repair", args=[repair.pk]))

    def bulk_repairs_view(self, request: HttpRequest) -> HttpResponse:
        self._require_view(request)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Bulk repairs",
            "repairs": BulkRepair.objects.order_by("-id")[:100],
            "labels": ACTION_LABELS,
        }
        return TemplateResponse(request, "admin/sagas/bulk_repairs.html", context)

    # -- extra pages -------------------------------------------------------

    def get_urls(self):
        view = self.admin_site.admin_view
        extra = [
            path("attention/", view(self.attention_view), name="sagas_attention"),
            path("dashboard/", view(self.dashboard_view), name="sagas_dashboard"),
            path("bulk/", view(self.bulk_repairs_view), name="sagas_bulk_repairs"),
            path("bulk/<int:repair_id>/", view(self.bulk_repair_view), name="sagas_bulk_repair"),
            path("bulk/<int:repair_id>/stop/", view(self.bulk_repair_stop_view), name="sagas_bulk_repair_stop"),
            path(
                "violation/<int:violation_id>/<str:action>/",
                view(partial(violation_action_view, self)),
                name="sagas_violation_action",
            ),
            path("approval/<int:request_id>/", view(partial(approval_view, self)), name="sagas_approval"),
            path(
                "deadletter/<int:dead_letter_id>/replay/",
                view(self.replay_dead_letter_view),
                name="sagas_deadletter_replay",
            ),
            path("<path:object_id>/action/<str:action>/", view(self.action_view), name="sagas_sagainstance_action"),
        ]
        return extra + super().get_urls()

    def _require_view(self, request: HttpRequest) -> None:
        if not self.has_view_permission(request):
            raise PermissionDenied(permission_refusal("sagas.view_sagainstance"))

    def attention_view(self, request: HttpRequest) -> HttpResponse:
        """The operators' landing page: processes down, then every saga, dead letter and
        violation that waits for someone, each count linking to the list it counts."""
        self._require_view(request)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Needs attention",
            "a": needs_attention(),
            "approvals": list(approvals_pending()[:20]),
            "approval_count": approvals_pending().count(),
            "alert_failures": list(alert_failures()[:20]),
            "heartbeat_ttl": settings.HEARTBEAT_TTL_SECONDS,
            "refresh_seconds": DASHBOARD_REFRESH_SECONDS,
            "changelist_url": reverse("admin:sagas_sagainstance_changelist"),
            "can_replay": request.user.has_perm(REPLAY_PERMISSION),
            "violation_actions": [
                (action, label)
                for action, label in (("acknowledge_violation", "Acknowledge"), ("resolve_violation", "Resolve"))
                if request.user.has_perm(VIOLATION_PERMISSIONS[action])
            ],
        }
        return TemplateResponse(request, "admin/sagas/attention.html", context)

    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        self._require_view(request)
        summary = selectors.dashboard_summary()
        minutes = summary.throughput.minutes
        labels = [point.minute for point in minutes]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Saga dashboard",
            "d": summary,
            "refresh_seconds": DASHBOARD_REFRESH_SECONDS,
            "heartbeat_ttl": settings.HEARTBEAT_TTL_SECONDS,
            "throughput_chart": bar_chart(
                labels=labels, values=[point.completed for point in minutes], unit="completed"
            ),
            "duration_chart": line_chart(
                labels=labels,
                series={
                    "p50": [point.p50_seconds for point in minutes],
                    "p95": [point.p95_seconds for point in minutes],
                },
            ),
            "can_replay": request.user.has_perm(REPLAY_PERMISSION),
            "changelist_url": reverse("admin:sagas_sagainstance_changelist"),
        }
        template = "admin/sagas/dashboard.html"
        if request.GET.get("fragment"):
            template = "admin/sagas/_dashboard_panels.html"
        return TemplateResponse(request, template, context)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        """The saga page replaces the change form: sagas are read here and repaired through
        the actions, never edited."""
        if request.method != "GET":
            return HttpResponseNotAllowed(["GET"])
        self._require_view(request)
        saga_id = selectors.saga_id_or_none(object_id)
        if saga_id is None:
            raise Http404("no such saga")
        try:
            detail = selectors.saga_detail(saga_id=saga_id)
        except SagaInstance.DoesNotExist:
            raise Http404("no such saga") from None
        saga = detail.saga
        actions = []
        if detail.definition is not None:
            for action in operations.saga_actions_available(saga=saga):
                if request.user.has_perm(ACTION_PERMISSIONS[action]):
                    actions.append(
                        {
                            "label": ACTION_LABELS[action],
                            "url": reverse("admin:sagas_sagainstance_action", args=[saga.pk, action]),
                            "action": action,
                        }
                    )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": saga,
            "title": f"Saga {saga.pk}",
            "detail": detail,
            "saga": saga,
            "actions": actions,
            "can_replay": request.user.has_perm(REPLAY_PERMISSION),
            "has_any_action_permission": any(request.user.has_perm(p) for p in ACTION_PERMISSIONS.values()),
            "now": timezone.now(),
            "causality": selectors.message_tree_rows(correlation_id=str(saga.pk)),
            "pending_approvals": list(approvals_pending().filter(saga_id=saga.pk)),
        }
        return TemplateResponse(request, "admin/sagas/saga_page.html", context)

    def action_view(self, request: HttpRequest, object_id: str, action: str) -> HttpResponse:
        """The confirmation form of one action (GET) and its execution (POST)."""
        if action not in SERVICES:
            raise Http404("no such action")
        self._require_view(request)
        saga_id = selectors.saga_id_or_none(object_id)
        if saga_id is None:
            raise Http404("no such saga")
        saga = get_object_or_404(SagaInstance, pk=saga_id)
        # Checked before the action runs, for GET and POST alike: a POST from staff without
        # the permission (a forged form) is a 403, and the attempt is audited.
        permission = ACTION_PERMISSIONS[action]
        if not request.user.has_perm(permission):
            if request.method == "POST":
                audit_refusal(
                    actor=request.user,
                    action=action,
                    saga_id=saga.pk,
                    reason=request.POST.get("reason", ""),
                    outcome=f"refused: permission denied (needs {permission})",
                )
            raise PermissionDenied(permission_refusal(permission))
        saga_url = reverse("admin:sagas_sagainstance_change", args=[saga.pk])
        form_class = MarkStepDoneForm if action == SagaAction.MARK_STEP_DONE else OperatorActionForm
        if request.method == "POST":
            form = form_class(request.POST)
            if form.is_valid():
                arguments = {
                    "saga_id": saga.pk,
                    "actor": request.user,
                    "reason": form.cleaned_data["reason"],
                    "expected_position": form.cleaned_data["position"] or None,
                }
                if action == SagaAction.MARK_STEP_DONE:
                    arguments["evidence"] = form.cleaned_data["evidence"]
                try:
                    saga = SERVICES[action](**arguments)
                except ApprovalRequested as exc:
                    self.message_user(
                        request,
                        f"{ACTION_LABELS[action]}: {exc}. Another operator approves or rejects it there.",
                        messages.WARNING,
                    )
                    return HttpResponseRedirect(reverse("admin:sagas_approval", args=[exc.request.pk]))
                except SagaActionRefused as exc:
                    self.message_user(request, f"{ACTION_LABELS[action]}: refused — {exc}", messages.ERROR)
                else:
                    where = f" at {saga.current_step} ({saga.phase})" if saga.current_step else ""
                    self.message_user(
                        request, f"{ACTION_LABELS[action]}: done. The saga is {saga.state}{where}.", messages.SUCCESS
                    )
                return HttpResponseRedirect(saga_url)
        elif request.method == "GET":
            form = form_class(initial={"position": operations.saga_position(saga)})
        else:
            return HttpResponseNotAllowed(["GET", "POST"])
        refusal = operations.saga_action_refusal(saga=saga, action=action)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": saga,
            "title": f"{ACTION_LABELS[action]} — saga {str(saga.pk)[:8]}",
            "saga": saga,
            "saga_url": saga_url,
            "label": ACTION_LABELS[action],
            "refusal": refusal,
            "preview": None if refusal else operations.saga_action_preview(saga=saga, action=action),
            "form": form,
        }
        return TemplateResponse(request, "admin/sagas/action_confirm.html", context)

    def replay_dead_letter_view(self, request: HttpRequest, dead_letter_id: int) -> HttpResponse:
        # Staff who may not even look at sagas are turned away unrecorded: only then is a
        # refused attempt worth a row of the append-only audit log.
        self._require_view(request)
        dead_letter = get_object_or_404(DeadLetter, pk=dead_letter_id)
        if not request.user.has_perm(REPLAY_PERMISSION):
            if request.method == "POST":
                audit_refusal(
                    actor=request.user,
                    action=operations.REPLAY_DEAD_LETTER,
                    saga_id=operations.saga_of(dead_letter.correlation_id),
                    target=f"deadletter:{dead_letter.pk}",
                    reason=request.POST.get("reason", ""),
                    outcome=f"refused: permission denied (needs {REPLAY_PERMISSION})",
                )
            raise PermissionDenied(permission_refusal(REPLAY_PERMISSION))
        back = request.POST.get("next") or request.GET.get("next") or reverse("admin:sagas_dashboard")
        if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}):
            back = reverse("admin:sagas_dashboard")
        form = DeadLetterReplayForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            try:
                message = operations.dead_letter_replay_by_operator(
                    dead_letter_id=dead_letter.pk, actor=request.user, reason=form.cleaned_data["reason"]
                )
            except SagaActionRefused as exc:
                self.message_user(request, f"Replay refused — {exc}", messages.ERROR)
            else:
                self.message_user(
                    request, f"Dead letter {dead_letter.pk} replayed as message {message.message_id}.", messages.SUCCESS
                )
            return HttpResponseRedirect(back)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Replay dead letter {dead_letter.pk}",
            "dead_letter": dead_letter,
            "form": form,
            "back": back,
        }
        return TemplateResponse(request, "admin/sagas/deadletter_replay.html", context)


@admin.register(AuditLog)
class AuditLogAdmin(admin.ModelAdmin):
    """Append-only: readable, never added, changed or deleted here (nor in the database)."""

    list_display = ["created_at", "actor_name", "action", "saga_link", "target", "reason", "outcome"]
    list_filter = ["action"]
    search_fields = ["=actor_name", "=target"]
    ordering = ["-id"]
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="saga")
    def saga_link(self, obj: AuditLog) -> str:
        if obj.saga_id is None:
            return "-"
        url = reverse("admin:sagas_sagainstance_change", args=[obj.saga_id])
        return format_html('<a href="{}"><code>{}</code></a>', url, str(obj.saga_id)[:8])


# Each replay is its own transaction inside the request: keep a selection to a page's worth.
REPLAY_LIMIT = 100
# The dead-letter actions and the permission each needs; a POST of one without it is audited.
DEAD_LETTER_ACTIONS = {
    "replay": (operations.REPLAY_DEAD_LETTER, REPLAY_PERMISSION),
    "discard": (operations.DISCARD_DEAD_LETTER, DISCARD_PERMISSION),
}


class DeadLetterSagaFilter(admin.SimpleListFilter):
    """The dead letters of one saga (its correlation id), as the saga column links them."""

    title = "saga"
    parameter_name = "saga"

    def lookups(self, request, model_admin):
        value = self.value()
        return [(value, str(value)[:8])] if value else []

    def queryset(self, request, queryset):
        return queryset.filter(correlation_id=self.value()) if self.value() else queryset


class DeadLetterMarkFilter(admin.SimpleListFilter):
    """What a saga's dead letter is to its saga now: computed from the sagas (the messaging
    layer knows none), over the letters the other filters leave, a few thousand at most."""

    title = "to its saga"
    parameter_name = "mark"
    NO_SAGA = "no saga"

    def lookups(self, request, model_admin):
        return [(mark.value, mark.value) for mark in DeadLetterMark] + [(self.NO_SAGA, self.NO_SAGA)]

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        candidates = queryset.only("id", "envelope")
        links = selectors.dead_letter_sagas(candidates.iterator(chunk_size=1000))
        if self.value() == self.NO_SAGA:
            return queryset.exclude(pk__in=list(links))
        return queryset.filter(pk__in=[pk for pk, link in links.items() if link.mark == self.value()])


class DeadLetterChangeList(ChangeList):
    """Reads the sagas of the page's dead letters once, for the saga, step and mark columns."""

    def get_results(self, request):
        super().get_results(request)
        links = selectors.dead_letter_sagas(self.result_list)
        for dead_letter in self.result_list:
            dead_letter.saga_link = links.get(dead_letter.pk)


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnlyAdmin):
    # Seven columns, as on the saga list, fit a 1366 px screen beside the filters: eleven
    # (consumer, type and error class apart, the mark apart from its attempt, delivery attempts)
    # cut the mark off even at 1400 px. The mark sits under its attempt.
    list_display = [
        "id",
        "failure_column",
        "status",
        "saga_column",
        "attempt_column",
        "reason_short",
        "created",
    ]
    list_filter = [
        "status",
        DeadLetterMarkFilter,
        "consumer",
        "type",
        "error_class",
        "poison",
        DeadLetterSagaFilter,
    ]
    search_fields = ["=message_id", "=correlation_id", "reason"]
    actions = ["replay", "discard"]
    change_list_template = "admin/outbox/deadletter/change_list.html"

    def get_changelist(self, request, **kwargs):
        return DeadLetterChangeList

    @admin.display(description="failure", ordering="consumer")
    def failure_column(self, obj: DeadLetter) -> str:
        return format_html(
            '{} / {}<br><span class="ops-muted">{}</span>', obj.consumer, obj.type or "?", obj.error_class or "-"
        )

    @admin.display(description="reason")
    def reason_short(self, obj: DeadLetter) -> str:
        return obj.reason[:120]

    @admin.display(description="dead since", ordering="created_at")
    def created(self, obj: DeadLetter) -> str:
        return utc_format(obj.created_at)

    @admin.display(description="saga")
    def saga_column(self, obj: DeadLetter) -> str:
        link = getattr(obj, "saga_link", None)
        if link is None:
            return "-"
        saga_url = reverse("admin:sagas_sagainstance_change", args=[link.saga_id])
        letters_url = reverse("admin:outbox_deadletter_changelist") + f"?saga={link.saga_id}"
        return format_html(
            '<a href="{}"><code>{}</code></a> (<a href="{}">its dead letters</a>)',
            saga_url,
            str(link.saga_id)[:8],
            letters_url,
        )

    @admin.display(description="step attempt")
    def attempt_column(self, obj: DeadLetter) -> str:
        link = getattr(obj, "saga_link", None)
        if link is None:
            return "-"
        return format_html(
            '{} ({}) #{}<br><span class="dead-letter-mark" title="{}">{}</span>',
            link.step,
            link.phase,
            link.attempt,
            link.why,
            link.mark,
        )

    def changelist_view(self, request, extra_context=None):
        action = request.POST.get("action") if request.method == "POST" else None
        if action in DEAD_LETTER_ACTIONS and self.has_view_permission(request):
            audited, permission = DEAD_LETTER_ACTIONS[action]
            if not request.user.has_perm(permission):
                # A forged POST of an action the list does not offer this user: refused
                # loudly and audited, never silently ignored.
                for pk in request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME)[:REPLAY_LIMIT]:
                    dead_letter = DeadLetter.objects.filter(pk=pk).first() if str(pk).isdigit() else None
                    link = selectors.dead_letter_saga(dead_letter) if dead_letter is not None else None
                    # A letter that carries no step (an event) still names its saga by correlation,
                    # as a refused single replay does.
                    saga_id = link.saga_id if link is not None else None
                    if saga_id is None and dead_letter is not None:
                        saga_id = operations.saga_of(dead_letter.correlation_id)
                    audit_refusal(
                        actor=request.user,
                        action=audited,
                        saga_id=saga_id,
                        target=f"deadletter:{pk}",
                        reason=request.POST.get("reason", ""),
                        outcome=f"refused: permission denied (needs {permission})",
                    )
                raise PermissionDenied(permission_refusal(permission))
        failures, sagas = selectors.dead_letter_groups()
        changelist_url = reverse("admin:outbox_deadletter_changelist")
        extra_context = {
            **(extra_context or {}),
            "failure_groups": [
                {
                    "group": group,
                    "url": changelist_url
                    + "?"
                    + urlencode(
                        {
                            "status__exact": DeadLetter.Status.DEAD,
                            "consumer": group.consumer,
                            "type": group.type,
                            "error_class": group.error_class,
                        }
                    ),
                }
                for group in failures
            ],
            "saga_groups": [
                {
                    "group": group,
                    "url": changelist_url
                    + "?"
                    + urlencode({"status__exact": DeadLetter.Status.DEAD, "saga": group.correlation_id}),
                }
                for group in sagas
            ],
        }
        return super().changelist_view(request, extra_context)

    @admin.action(description="Replay the selected dead letters…", permissions=["replay"])
    def replay(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> HttpResponse | None:
        """First a page asking for the reason (for the audit log), then one replay per dead
        letter, each with its own audit row: a refused one does not hold back the others."""
        return self._each_with_reason(
            request,
            queryset,
            action_name="replay",
            title="Replay",
            service=operations.dead_letter_replay_by_operator,
            done="{} dead letter(s) replayed.",
            refused="Not replayed",
        )

    @admin.action(description="Discard the selected dead letters with a reason…", permissions=["discard"])
    def discard(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> HttpResponse | None:
        """Take superseded dead letters, and those of finished sagas, off the list: each is
        kept, marked discarded with your name and reason, and audited."""
        return self._each_with_reason(
            request,
            queryset,
            action_name="discard",
            title="Discard",
            service=operations.dead_letter_discard_by_operator,
            done="{} dead letter(s) discarded.",
            refused="Not discarded",
        )

    def _each_with_reason(
        self,
        request: HttpRequest,
        queryset: QuerySet[DeadLetter],
        *,
        action_name: str,
        title: str,
        service: Callable[..., Any],
        done: str,
        refused: str,
    ) -> HttpResponse | None:
        total = queryset.count()
        if total > REPLAY_LIMIT:
            self.message_user(
                request, f"{total} dead letters selected; at most {REPLAY_LIMIT} at a time.", messages.ERROR
            )
            return None
        form = BulkActionForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            succeeded, refusals = 0, []
            for pk in queryset.order_by("pk").values_list("pk", flat=True):
                try:
                    service(dead_letter_id=pk, actor=request.user, reason=form.cleaned_data["reason"])
                    succeeded += 1
                except SagaActionRefused as exc:
                    refusals.append(f"{pk}: {exc}")
            if succeeded:
                self.message_user(request, done.format(succeeded), messages.SUCCESS)
            for line in refusals:
                self.message_user(request, f"{refused} — {line}", messages.ERROR)
            return None
        dead_letters = list(queryset.order_by("pk"))
        links = selectors.dead_letter_sagas(dead_letters)
        for dead_letter in dead_letters:
            dead_letter.saga_link = links.get(dead_letter.pk)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"{title} {total} dead letter(s)",
            "form": form,
            "action_name": action_name,
            "submit_label": title,
            "dead_letters": dead_letters,
            "selected": request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME),
            "select_across": request.POST.get("select_across", "0"),
        }
        return TemplateResponse(request, f"admin/outbox/deadletter/{action_name}_confirm.html", context)

    def has_replay_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(REPLAY_PERMISSION)

    def has_discard_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(DISCARD_PERMISSION)


def _single_saga(selected: list[str]) -> object | None:
    """The saga an audit row about a selection names: the one selected, if only one was."""
    return operations.saga_of(selected[0]) if len(selected) == 1 else None


@admin.register(ApprovalRequest)
class ApprovalRequestAdmin(ReadOnlyAdmin):
    """Four-eyes requests, decided on their own page (linked from "needs attention")."""

    list_display = [
        "id",
        "action",
        "saga_id",
        "amount_money",
        "requested_by_name",
        "status",
        "approver_name",
        "created_at",
    ]
    list_filter = ["status", "action"]
    ordering = ["-id"]
    amount_money = money_display()

    def change_view(self, request, object_id, form_url="", extra_context=None):
        return HttpResponseRedirect(reverse("admin:sagas_approval", args=[object_id]))


@admin.register(Incident)
class IncidentAdmin(ReadOnlyAdmin):
    list_display = ["key", "title", "count", "opened_at", "last_sent_at", "closed_at"]
    list_filter = [("closed_at", admin.EmptyFieldListFilter)]
    search_fields = ["key"]
    ordering = ["-id"]


@admin.register(AlertDelivery)
class AlertDeliveryAdmin(ReadOnlyAdmin):
    list_display = ["id", "incident", "channel", "target", "status", "attempts", "next_attempt_at", "last_error"]
    list_filter = ["status", "channel"]
    ordering = ["-id"]
