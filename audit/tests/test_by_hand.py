"""The auditor and money moved by hand: a charge or refund an operator made in the provider's
console, and a charge that landed late and was given back, are consistent books, not
violations; a step the saga's log says was done by hand, with no record of it in its
participant's books, is one."""

import uuid

import pytest
from django.contrib.auth import get_user_model

from audit.models import Violation
from audit.services import audit_run
from console.operations import saga_mark_step_done
from payments.gateway import FakeGateway
from payments.models import GatewayCharge
from payments.models import StepOutcome as PaymentStepOutcome
from sagas.keys import step_key
from sagas.models import SagaState
from testing.messages import sent_envelope
from testing.saga_states import make_catalog, place, settle, stuck

pytestmark = pytest.mark.django_db

Kind = Violation.Kind


@pytest.fixture
def operator():
    from django.apps import apps

    from console.operators import operators_group_ensure

    user = get_user_model().objects.create_user("olga", password="pw", is_staff=True)
    user.groups.add(operators_group_ensure(apps))
    return user


def _console_charge(amount: int = 4500) -> str:
    key = f"console:{uuid.uuid4()}"
    return FakeGateway().charge(idempotency_key=key, amount=amount, currency="EUR", token="tok_visa").transaction_id


def _charged_by_hand(operator):
    make_catalog()
    saga = stuck()
    charge_id = _console_charge()
    saga_mark_step_done(saga_id=saga.pk, actor=operator, reason="gateway outage", evidence=f"charged {charge_id}")
    settle()
    saga.refresh_from_db()
    assert saga.state == SagaState.COMPLETED
    return saga, charge_id


def test_an_order_charged_by_hand_in_the_providers_console_is_consistent(operator):
    _charged_by_hand(operator)
    assert audit_run(full=True).findings == []


def test_a_charge_by_hand_that_lost_to_a_copy_in_flight_and_was_refunded_is_consistent(operator):
    from outbox.consumer import deliver
    from outbox.models import OutboxMessage

    make_catalog()
    saga = place()
    in_flight = OutboxMessage.objects.get(type="charge_payment")
    charge_id = _console_charge()
    saga_mark_step_done(saga_id=saga.pk, actor=operator, reason="gateway outage", evidence=f"charged {charge_id}")
    OutboxMessage.objects.filter(pk=in_flight.pk).update(published_at=in_flight.created_at)
    deliver(sent_envelope(in_flight))
    settle()

    assert GatewayCharge.objects.filter(kind="refund", charge_transaction_id=charge_id).count() == 1
    assert audit_run(full=True).findings == []


def test_a_step_done_by_hand_that_its_participant_never_recorded_is_reported(operator):
    saga, _ = _charged_by_hand(operator)
    PaymentStepOutcome.objects.filter(step_key=step_key(saga.pk, "charge_payment")).update(outcome="done")

    report = audit_run(full=True)

    assert [finding.kind for finding in report.findings] == [Kind.MANUAL_STEP_UNRECORDED]
    assert "charge_payment (forward)" in report.findings[0].detail
