"""The console's page for a four-eyes request: what was asked, by whom, on which saga, and the
approve and reject forms (POST), behind the action's own permission, audited either way."""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

from console.approvals import APPROVE_REQUEST, REJECT_REQUEST, approval_approve, approval_reject
from console.audit import OPERATOR_TEXT_MAX, audit_refusal
from console.models import ApprovalRequest
from console.operations import ACTION_LABELS, ACTION_PERMISSIONS
from console.refusals import permission_refusal
from sagas.exceptions import SagaActionRefused

VIEW_PERMISSION = "sagas.view_sagainstance"


class ApprovalDecisionForm(forms.Form):
    decision = forms.ChoiceField(choices=[("approve", "approve"), ("reject", "reject")])
    text = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80}),
        max_length=OPERATOR_TEXT_MAX,
        required=False,
        help_text="A note when approving; the reason when rejecting (required). Written to the audit log.",
    )


def approval_view(model_admin: admin.ModelAdmin, request: HttpRequest, request_id: int) -> HttpResponse:
    if not request.user.has_perm(VIEW_PERMISSION):
        raise PermissionDenied(permission_refusal(VIEW_PERMISSION))  # turned away unrecorded
    approval = ApprovalRequest.objects.select_related("saga").filter(pk=request_id).first()
    if approval is None:
        raise Http404("no such request")
    if request.method not in ("GET", "POST"):
        return HttpResponseNotAllowed(["GET", "POST"])
    permission = ACTION_PERMISSIONS[approval.action]
    form = ApprovalDecisionForm(request.POST if request.method == "POST" else None)
    if request.method == "POST":
        decision = request.POST.get("decision")
        if not request.user.has_perm(permission):
            audit_refusal(
                actor=request.user,
                action=REJECT_REQUEST if decision == "reject" else APPROVE_REQUEST,
                saga_id=approval.saga_id,
                target=f"approval:{approval.pk}",
                reason=request.POST.get("text", ""),
                outcome=f"refused: permission denied (needs {permission})",
            )
            raise PermissionDenied(permission_refusal(permission))
        if form.is_valid():
            text = form.cleaned_data["text"]
            try:
                if form.cleaned_data["decision"] == "approve":
                    approval_approve(request_id=approval.pk, actor=request.user, note=text)
                    done = f"Request #{approval.pk} approved and executed."
                else:
                    approval_reject(request_id=approval.pk, actor=request.user, reason=text)
                    done = f"Request #{approval.pk} rejected."
            except SagaActionRefused as exc:
                model_admin.message_user(request, f"Request #{approval.pk}: refused — {exc}", messages.ERROR)
            else:
                model_admin.message_user(request, done, messages.SUCCESS)
            return HttpResponseRedirect(reverse("admin:sagas_approval", args=[approval.pk]))
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": f"Four eyes: request #{approval.pk}",
        "approval": approval,
        "label": ACTION_LABELS.get(approval.action, approval.action),
        "form": form,
        "can_decide": request.user.has_perm(permission) and approval.status == ApprovalRequest.Status.PENDING,
        "is_requester": approval.requested_by_id == request.user.pk,
        "saga_url": reverse("admin:sagas_sagainstance_change", args=[approval.saga_id]),
    }
    return TemplateResponse(request, "admin/sagas/approval.html", context)
