"""Violations with a lifecycle: linked to their saga, acknowledged with a note, resolved with
a reason only once the auditor's check no longer finds them, reopened by the auditor when
the corruption comes back; every step permission-checked and in the console's audit log."""

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from audit.models import Violation
from audit.services import audit_run
from console.models import AuditLog
from console.operators import operators_group_ensure
from orders.models import Order
from sagas.models import SagaInstance
from shipping.models import Shipment
from testing import scenarios

pytestmark = pytest.mark.django_db

ATTENTION = "/admin/sagas/sagainstance/attention/"


@pytest.fixture
def operator_client() -> Client:
    user = get_user_model().objects.create_user("olga", password="pw", is_staff=True)
    user.groups.add(operators_group_ensure(apps))
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def viewer_client() -> Client:
    user = get_user_model().objects.create_user("vic", password="pw", is_staff=True)
    user.user_permissions.add(
        Permission.objects.get(codename="view_sagainstance"), Permission.objects.get(codename="view_violation")
    )
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def broken():
    """A confirmed order with a second live shipment planted: the auditor opens a violation."""
    scenarios.catalog()
    order = scenarios.confirmed()
    planted = Shipment.objects.create(order_id=order.pk, idempotency_key="planted", status="created")
    audit_run(full=True)
    violation = Violation.objects.get(resolved_at=None)
    saga = SagaInstance.objects.get(pk=Order.objects.get(pk=order.pk).saga_id)
    return violation, saga, planted


def _url(violation: Violation, action: str) -> str:
    return reverse("admin:sagas_violation_action", args=[violation.pk, action])


def _saga_url(saga: SagaInstance) -> str:
    return reverse("admin:sagas_sagainstance_change", args=[saga.pk])


def test_an_open_violation_links_to_its_saga_and_offers_its_actions(broken, operator_client):
    violation, saga, _ = broken
    page = operator_client.get(ATTENTION).content.decode()
    assert _url(violation, "acknowledge_violation") in page and _url(violation, "resolve_violation") in page
    found = operator_client.get("/admin/sagas/sagainstance/", {"q": violation.console_target})
    assert found["Location"] == _saga_url(saga)
    form = operator_client.get(_url(violation, "resolve_violation")).content.decode()
    assert f'href="{_saga_url(saga)}" id="violation-saga-link"' in form


def test_acknowledging_needs_a_note_and_is_audited_with_the_saga(broken, operator_client):
    violation, saga, _ = broken
    operator_client.post(_url(violation, "acknowledge_violation"), {"text": "  "})
    violation.refresh_from_db()
    assert violation.acknowledged_at is None
    response = operator_client.post(_url(violation, "acknowledge_violation"), {"text": "olga on it (INC-9)"})
    assert response.status_code == 302
    violation.refresh_from_db()
    assert violation.acknowledged_by == "olga" and violation.acknowledgement_note == "olga on it (INC-9)"
    assert violation.is_open
    audit = AuditLog.objects.get(action="acknowledge_violation")
    assert audit.saga_id == saga.pk and audit.target == f"violation:{violation.pk}"
    assert "acknowledged by olga: olga on it (INC-9)" in operator_client.get(ATTENTION).content.decode()


def test_resolving_is_refused_while_the_check_still_finds_it_then_closes_once_repaired(broken, operator_client):
    violation, saga, planted = broken
    response = operator_client.post(
        _url(violation, "resolve_violation"), {"text": "cancelled the extra shipment"}, follow=True
    )
    page = response.content.decode()
    assert "Resolve: refused — the auditor&#x27;s check still finds it" in page
    violation.refresh_from_db()
    assert violation.is_open
    refused = AuditLog.objects.get(action="resolve_violation")
    assert refused.outcome.startswith("refused: the auditor's check still finds it") and refused.saga_id == saga.pk

    Shipment.objects.filter(pk=planted.pk).update(status="cancelled")  # the repair
    operator_client.post(_url(violation, "resolve_violation"), {"text": "cancelled the extra shipment"})
    violation.refresh_from_db()
    assert not violation.is_open and violation.resolved_by == "olga"
    assert violation.resolution_reason == "cancelled the extra shipment"
    done = AuditLog.objects.filter(action="resolve_violation").order_by("id").last()
    assert done.outcome.startswith("resolved") and done.saga_id == saga.pk


def test_the_auditor_reopens_a_resolved_violation_when_the_corruption_comes_back(broken, operator_client):
    violation, _, planted = broken
    operator_client.post(_url(violation, "acknowledge_violation"), {"text": "looking"})
    Shipment.objects.filter(pk=planted.pk).update(status="cancelled")
    operator_client.post(_url(violation, "resolve_violation"), {"text": "cancelled it"})
    Shipment.objects.filter(pk=planted.pk).update(status="created")  # back again
    audit_run(full=True)
    violation.refresh_from_db()
    assert violation.is_open and violation.reopened == 1
    assert violation.acknowledged_at is None and violation.resolved_by == "olga"


def test_acting_on_a_violation_needs_its_permission_and_a_refusal_is_audited(broken, viewer_client):
    violation, saga, _ = broken
    response = viewer_client.post(_url(violation, "resolve_violation"), {"text": "trust me"})
    assert response.status_code == 403 and "audit.resolve_violation" in response.content.decode()
    violation.refresh_from_db()
    assert violation.is_open
    audit = AuditLog.objects.get(actor_name="vic")
    assert audit.saga_id == saga.pk and audit.outcome == "refused: permission denied (needs audit.resolve_violation)"
