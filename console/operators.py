"""The "Operators" group: who may look at the console and repair sagas.

One function creates it, used by the data migration and by tests whose database was flushed
(a flush keeps permissions, which post_migrate recreates, but loses the group).
"""

from django.apps import apps as global_apps
from django.apps.registry import Apps
from django.contrib.auth.management import create_permissions

OPERATORS_GROUP = "Operators"

# (app label, codename): the four saga actions, replaying and discarding dead letters, and reading
# everything an operator needs to judge a saga. Ledgers are readable, never writable.
OPERATOR_PERMISSIONS: list[tuple[str, str]] = [
    ("sagas", "retry_saga"),
    ("sagas", "compensate_saga"),
    ("sagas", "retry_compensation_saga"),
    ("sagas", "mark_step_done_saga"),
    ("sagas", "view_sagainstance"),
    ("console", "view_auditlog"),
    ("console", "view_approvalrequest"),
    ("console", "view_incident"),
    ("console", "view_alertdelivery"),
    ("outbox", "replay_deadletter"),
    ("outbox", "discard_deadletter"),
    ("outbox", "view_deadletter"),
    ("outbox", "view_outboxmessage"),
    ("outbox", "view_inboxmessage"),
    ("orders", "view_order"),
    ("payments", "view_payment"),
    ("payments", "view_ledgerentry"),
    ("payments", "view_gatewaycharge"),
    ("inventory", "view_product"),
    ("inventory", "view_stocklevel"),
    ("inventory", "view_reservation"),
    ("inventory", "view_stockmovement"),
    ("shipping", "view_shipment"),
    ("shipping", "view_carriershipment"),
    ("audit", "view_violation"),
    ("audit", "acknowledge_violation"),
    ("audit", "resolve_violation"),
    ("audit", "view_auditrun"),
]


def operators_group_ensure(apps: Apps) -> object:
    """Create the group (idempotent) with exactly :data:`OPERATOR_PERMISSIONS`.

    ``apps`` is the migration's historical registry or ``django.apps.apps``. Permissions are
    normally created by post_migrate, after all migrations; a fresh database runs this
    migration before that, so the permissions are created here first when missing.
    """

    for app_config in apps.get_app_configs():
        # A migration's app configs are stubs without a models module, which create_permissions
        # takes for "no models"; the real registry's configs are left as they were.
        had_models_module = getattr(app_config, "models_module", None)
        app_config.models_module = had_models_module or True
        try:
            create_permissions(app_config, apps=apps, verbosity=0)
        finally:
            app_config.models_module = had_models_module

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name=OPERATORS_GROUP)
    wanted = []
    for app_label, codename in OPERATOR_PERMISSIONS:
        permission = Permission.objects.filter(content_type__app_label=app_label, codename=codename).first()
        if permission is None:
            if not _has_models(apps, app_label) or not _declared(apps, app_label, codename):
                continue  # that app (or that permission) is migrated later; its migration calls this again
            raise LookupError(f"permission {app_label}.{codename} does not exist")
        wanted.append(permission)
    group.permissions.set(wanted)
    return group


def _has_models(apps: Apps, app_label: str) -> bool:
    try:
        return any(True for _ in apps.get_app_config(app_label).get_models())
    except LookupError:
        return False


def _declared(apps: Apps, app_label: str, codename: str) -> bool:
    """Whether a model of the app declares the permission: always so in the real registry (a
    misspelt codename is an error), and in a migration's from the migration that adds it."""
    if apps is global_apps:
        return True
    for model in apps.get_app_config(app_label).get_models():
        opts = model._meta
        declared = {f"{action}_{opts.model_name}" for action in opts.default_permissions}
        declared |= {name for name, _ in opts.permissions}
        if codename in declared:
            return True
    return False
