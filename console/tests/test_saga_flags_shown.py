"""What the console says of a saga's flags agrees with its state: a failed saga is not also
shown stuck, every page counts the same stuck sagas, and a repaired saga no longer shows the
failure of the compensation it got over."""

import re
from datetime import timedelta

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from console.operations import saga_retry_compensation
from console.operators import operators_group_ensure
from console.selectors import dashboard_summary
from outbox.models import OutboxMessage
from sagas.models import Outcome, SagaInstance, SagaState
from sagas.orchestrator import saga_sweep
from testing.saga_states import compensating, failed, make_catalog, reply, stuck

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/sagas/sagainstance/"


@pytest.fixture
def catalog():
    return make_catalog()


@pytest.fixture
def operator_client() -> Client:
    user = get_user_model().objects.create_user("olga", password="pw", is_staff=True)
    user.groups.add(operators_group_ensure(apps))
    client = Client()
    client.force_login(user)
    return client


def _saga_page(client: Client, saga: SagaInstance) -> str:
    return client.get(reverse("admin:sagas_sagainstance_change", args=[saga.pk])).content.decode()


def _banner(page: str, banner_id: str) -> str | None:
    found = re.search(rf'<div class="ops-banner" id="{banner_id}">(.*?)</div>', page, re.S)
    return found.group(1) if found else None


def test_a_saga_whose_flagged_compensation_fails_shows_one_banner_and_one_count(catalog, operator_client):
    stuck(), stuck()  # two sagas stuck going forward
    saga = compensating()
    OutboxMessage.objects.filter(published_at__isnull=True).update(published_at=timezone.now())
    SagaInstance.objects.filter(pk=saga.pk).update(step_deadline=timezone.now() - timedelta(seconds=1))
    saga_sweep()  # the refund went unanswered: flagged
    reply(saga, Outcome.TECHNICAL_FAILURE, error="GatewayUnavailable: refunds are down")
    assert saga.state == SagaState.FAILED

    page = _saga_page(operator_client, saga)
    assert _banner(page, "stuck-reason") is None
    assert _banner(page, "failure-reason").startswith("Compensation failed: compensation charge_payment failed")

    # The index links "Stuck sagas" to this filter; the dashboard counts its own way.
    listed = operator_client.get(CHANGELIST, {"stuck__exact": "1"}).content.decode()
    assert len(re.findall(r'<tr[^>]*>\s*<td class="action-checkbox">', listed)) == 2
    assert dashboard_summary().stuck_count == 2


def test_a_failed_saga_compensated_after_a_repair_shows_why_it_compensated_not_that_it_failed(catalog, operator_client):
    saga = failed()
    assert "compensation charge_payment failed" in saga.failure_reason

    saga_retry_compensation(saga_id=saga.pk, actor=None, reason="refunds are back")
    reply(saga)  # refunded
    reply(saga)  # the order is cancelled
    assert saga.state == SagaState.COMPENSATED

    banner = _banner(_saga_page(operator_client, saga), "failure-reason")
    assert banner == "Failure reason: out of stock"
