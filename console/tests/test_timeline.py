"""The saga page's timeline reads in the order things happened: an operator's action before
the attempt it sent, the sweeper's resend before its attempt, and each attempt's duration
measured on one clock, whatever the web's clock says."""

import re
from datetime import timedelta
from unittest import mock

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from console.operations import saga_mark_step_done, saga_retry_step
from console.operators import operators_group_ensure
from console.selectors import saga_detail
from outbox.models import OutboxMessage
from payments.gateway import FakeGateway
from sagas.models import SagaInstance, SagaState
from sagas.orchestrator import saga_sweep
from testing.saga_states import make_catalog, place, settle, stuck

pytestmark = pytest.mark.django_db

REASON = "gateway outage resolved (INC-42)"


@pytest.fixture
def catalog():
    return make_catalog()


@pytest.fixture
def operator():
    user = get_user_model().objects.create_user("olga", password="pw", is_staff=True)
    user.groups.add(operators_group_ensure(apps))
    return user


def _lines(saga: SagaInstance) -> list[str]:
    """The timeline as the page lists it: each attempt by step and number, each event by kind."""
    lines = []
    for entry in saga_detail(saga_id=saga.pk).timeline:
        if entry.kind == "attempt":
            lines.append(f"{entry.attempt.step}#{entry.attempt.attempt}")
        else:
            lines.append(entry.event.kind)
    return lines


def test_an_operators_retry_is_listed_before_the_attempt_it_sent(catalog, operator):
    saga = stuck()
    saga_retry_step(saga_id=saga.pk, actor=operator, reason=REASON)
    saga.refresh_from_db()

    lines = _lines(saga)
    assert lines.index("operator_retry_step") == lines.index(f"charge_payment#{saga.attempt}") - 1


def test_the_sweepers_resend_is_listed_before_the_attempt_it_sent(catalog):
    saga = place()
    OutboxMessage.objects.update(published_at=timezone.now())  # handed to the broker, then lost
    SagaInstance.objects.filter(pk=saga.pk).update(last_sent_at=timezone.now() - timedelta(hours=1))
    assert saga_sweep()["resent"] == 1

    lines = _lines(saga)
    assert lines[-2:] == ["resent", "charge_payment#2"]


def test_a_step_done_by_hand_shows_a_duration_of_zero_or_more_when_the_webs_clock_is_behind(catalog, operator):
    saga = stuck()
    charge_id = FakeGateway().charge(idempotency_key="console:1", amount=4500, currency="EUR", token="tok_visa")
    evidence = f"charged {charge_id.transaction_id} in the provider's console"
    saga_mark_step_done(saga_id=saga.pk, actor=operator, reason=REASON, evidence=evidence)
    behind = timezone.now() - timedelta(milliseconds=50)
    with mock.patch("django.utils.timezone.now", return_value=behind):  # the web's clock, a little behind
        settle()
    saga.refresh_from_db()
    assert saga.state == SagaState.COMPLETED

    durations = [entry.attempt.duration_ms for entry in saga_detail(saga_id=saga.pk).timeline if entry.attempt]
    assert all(duration is not None and duration >= 0 for duration in durations)
    client = Client()
    client.force_login(operator)
    page = client.get(reverse("admin:sagas_sagainstance_change", args=[saga.pk])).content.decode()
    shown = [float(value) for value in re.findall(r"<td>(-?[0-9.]+) ms</td>", page)]
    assert shown and min(shown) >= 0
