"""The console's pages to acknowledge and resolve a violation: a confirmation form (GET) and
the action (POST), behind its permission, audited whether done or refused."""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme

from audit.selectors import violation_get
from console.audit import OPERATOR_TEXT_MAX, audit_refusal
from console.refusals import permission_refusal
from console.violations import (
    ACKNOWLEDGE_VIOLATION,
    VIOLATION_LABELS,
    VIOLATION_PERMISSIONS,
    saga_of_violation,
    violation_act_by_operator,
)
from sagas.exceptions import SagaActionRefused

VIEW_PERMISSION = "audit.view_violation"


class ViolationActionForm(forms.Form):
    text = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 80}), max_length=OPERATOR_TEXT_MAX)


def violation_action_view(
    model_admin: admin.ModelAdmin, request: HttpRequest, violation_id: int, action: str
) -> HttpResponse:
    if action not in VIOLATION_PERMISSIONS:
        raise Http404("no such action")
    if not request.user.has_perm(VIEW_PERMISSION):
        raise PermissionDenied(permission_refusal(VIEW_PERMISSION))  # turned away unrecorded
    violation = violation_get(violation_id=violation_id)
    if violation is None:
        raise Http404("no such violation")
    permission = VIOLATION_PERMISSIONS[action]
    if not request.user.has_perm(permission):
        if request.method == "POST":
            audit_refusal(
                actor=request.user,
                action=action,
                saga_id=saga_of_violation(violation),
                target=f"violation:{violation.pk}",
                reason=request.POST.get("text", ""),
                outcome=f"refused: permission denied (needs {permission})",
            )
        raise PermissionDenied(permission_refusal(permission))
    back = request.POST.get("next") or request.GET.get("next") or reverse("admin:sagas_attention")
    if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}):
        back = reverse("admin:sagas_attention")
    if request.method not in ("GET", "POST"):
        return HttpResponseNotAllowed(["GET", "POST"])
    form = ViolationActionForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        label = VIOLATION_LABELS[action]
        try:
            violation_act_by_operator(
                action=action, violation_id=violation.pk, actor=request.user, text=form.cleaned_data["text"]
            )
        except SagaActionRefused as exc:
            model_admin.message_user(request, f"{label}: refused — {exc}", messages.ERROR)
        else:
            model_admin.message_user(request, f"{label}: done for {violation.kind} {violation.key}.", messages.SUCCESS)
        return HttpResponseRedirect(back)
    saga_id = saga_of_violation(violation)
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": f"{VIOLATION_LABELS[action]} violation {violation.pk}",
        "violation": violation,
        "action": action,
        "label": VIOLATION_LABELS[action],
        "text_label": "Note" if action == ACKNOWLEDGE_VIOLATION else "Reason (what was repaired)",
        "form": form,
        "back": back,
        "saga_url": reverse("admin:sagas_sagainstance_change", args=[saga_id]) if saga_id else None,
    }
    return TemplateResponse(request, "admin/sagas/violation_action.html", context)
