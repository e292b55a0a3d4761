"""Refusing an operator who lacks a permission: visibly, saying which permission is missing,
and in the audit log when they were allowed to see what they tried to change.

A refused request raises PermissionDenied with the sentence to show; the project's 403 page
(templates/403.html, in the admin's style) shows it. A bulk action of the admin that the user
may not run is not in their action list, so Django would drop a forged POST of it with "No
action selected" and no trace; :func:`refuse_forged_action` refuses and audits it instead.
"""

from collections.abc import Callable

from django.contrib import admin
from django.contrib.auth.models import Permission
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest

from console.audit import audit_refusal


def permission_refusal(permission: str) -> str:
    """``"sagas.retry_saga"`` -> what the 403 page says."""
    app_label, _, codename = permission.partition(".")
    row = Permission.objects.filter(content_type__app_label=app_label, codename=codename).only("name").first()
    label = f"“{row.name}” ({permission})" if row is not None else permission
    return (
        f"You do not have the permission {label} that this needs. Ask an administrator to add you to the"
        " Operators group, or to give you that permission."
    )


def refuse_forged_action(
    model_admin: admin.ModelAdmin,
    request: HttpRequest,
    *,
    permissions: dict[str, str],
    saga_of: Callable[[list[str]], object | None],
    audit_action: Callable[[str], str] = lambda name: name,
) -> None:
    """Raise PermissionDenied, after auditing, when the POSTed admin action is one of this
    admin's but not one the user may run. ``permissions`` maps the action's declared
    permissions ("retry") to the permission they stand for ("sagas.retry_saga"); ``saga_of``
    names the saga the selection belongs to, when it is one."""
    name = request.POST.get("action", "")
    if name in model_admin.get_actions(request):
        return
    declared = [action for action in model_admin.actions or [] if isinstance(action, str)]
    if name not in declared:
        return  # not an action of this list: Django answers "No action selected"
    if not model_admin.has_view_permission(request):
        raise PermissionDenied(permission_refusal(f"{model_admin.opts.app_label}.view_{model_admin.opts.model_name}"))
    function = getattr(model_admin, name)
    missing = [
        permissions.get(short, short)
        for short in getattr(function, "allowed_permissions", ())
        if not getattr(model_admin, f"has_{short}_permission")(request)
    ]
    permission = missing[0] if missing else name
    selected = request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME)
    across = request.POST.get("select_across") == "1"
    what = "every saga of the filter" if across else f"{len(selected)} selected: {', '.join(selected[:20])}"
    audit_refusal(
        actor=request.user,
        action=audit_action(name),
        saga_id=None if across else saga_of(selected),
        target=f"bulk {name}",
        reason=request.POST.get("reason", ""),
        outcome=f"refused: permission denied (needs {permission}) for {what}",
    )
    raise PermissionDenied(permission_refusal(permission))
