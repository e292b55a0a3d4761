"""Operator actions on sagas: each action in each state, allowed or refused, and the audit
rows they leave. Replies are handled synchronously in the test process; where an outcome
depends on what the participants do (tombstones, refunds), their real handlers run in-process."""

import uuid

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from console.models import AuditLog
from console.operations import (
    ACTION_PERMISSIONS,
    REPLAY_PERMISSION,
    dead_letter_replay_by_operator,
    saga_compensate,
    saga_mark_step_done,
    saga_position,
    saga_retry_compensation,
    saga_retry_step,
)
from console.operators import OPERATOR_PERMISSIONS, OPERATORS_GROUP, operators_group_ensure
from orders.models import Order
from outbox.consumer import deliver
from outbox.models import DeadLetter, OutboxMessage
from outbox.signing import signed
from payments.gateway import FakeGateway
from payments.models import GatewayCharge, LedgerEntry, Payment
from payments.models import StepOutcome as PaymentStepOutcome
from sagas.exceptions import SagaActionRefused
from sagas.keys import step_key
from sagas.models import Outcome, Phase, SagaEvent, SagaInstance, SagaState, SagaStep
from testing.messages import sent_envelope
from testing.saga_states import (
    STATES,
    completed,
    failed,
    make_catalog,
    reply,
    running,
    settle,
    stuck,
    stuck_past_pivot,
)

pytestmark = pytest.mark.django_db

REASON = "gateway outage resolved (INC-42)"
EVIDENCE = "refund re_123 made in the provider's console"


@pytest.fixture
def catalog():
    return make_catalog()


@pytest.fixture
def operator():
    user = get_user_model().objects.create_user("olga", password="pw", is_staff=True)
    user.groups.add(operators_group_ensure(apps))
    return user


# Which action each state allows (True) or refuses (False).
MATRIX = {
    "running": {"retry_step": True, "compensate": True, "retry_compensation": False, "mark_step_done": True},
    "stuck": {"retry_step": True, "compensate": True, "retry_compensation": False, "mark_step_done": True},
    "stuck_past_pivot": {"retry_step": True, "compensate": False, "retry_compensation": False, "mark_step_done": True},
    "compensating": {"retry_step": True, "compensate": False, "retry_compensation": False, "mark_step_done": True},
    "failed": {"retry_step": False, "compensate": False, "retry_compensation": True, "mark_step_done": True},
    "completed": {"retry_step": False, "compensate": False, "retry_compensation": False, "mark_step_done": False},
    "compensated": {"retry_step": False, "compensate": False, "retry_compensation": False, "mark_step_done": False},
}

SERVICES = {
    "retry_step": saga_retry_step,
    "compensate": saga_compensate,
    "retry_compensation": saga_retry_compensation,
    "mark_step_done": lambda **kwargs: saga_mark_step_done(evidence=EVIDENCE, **kwargs),
}


@pytest.mark.parametrize(
    ("state", "action"), [(state, action) for state in MATRIX for action in MATRIX[state]], ids=lambda v: v
)
def test_each_action_in_each_state_is_allowed_or_refused_and_audited(catalog, operator, state, action):
    with connection.cursor() as cursor:
        cursor.execute("SELECT now()")  # the database's clock, which stamps the audit log
        (started_at,) = cursor.fetchone()
    saga = STATES[state]()
    before = (saga.state, saga.current_step, saga.attempt, saga.stuck)
    events_before = SagaEvent.objects.filter(saga=saga).count()

    if MATRIX[state][action]:
        SERVICES[action](saga_id=saga.pk, actor=operator, reason=REASON)
        audit = AuditLog.objects.get(saga=saga)
        assert not audit.outcome.startswith("refused"), audit.outcome
        assert SagaEvent.objects.filter(saga=saga, kind=f"operator_{action}").count() == 1
    else:
        with pytest.raises(SagaActionRefused) as refused:
            SERVICES[action](saga_id=saga.pk, actor=operator, reason=REASON)
        assert str(refused.value)  # a clear message, shown to the operator
        audit = AuditLog.objects.get(saga=saga)
        assert audit.outcome == f"refused: {refused.value}"
        saga.refresh_from_db()
        assert (saga.state, saga.current_step, saga.attempt, saga.stuck) == before, "a refusal changes nothing"
        assert SagaEvent.objects.filter(saga=saga).count() == events_before
    assert (audit.actor, audit.actor_name, audit.action, audit.reason) == (operator, "olga", action, REASON)
    assert started_at <= audit.created_at <= timezone.now(), "stamped when the action was taken"


def test_refusals_say_why_in_words_an_operator_understands(catalog, operator):
    saga = stuck_past_pivot()
    with pytest.raises(SagaActionRefused, match="past its pivot.*confirm_order"):
        saga_compensate(saga_id=saga.pk, actor=operator, reason=REASON)
    saga = failed()
    with pytest.raises(SagaActionRefused, match="retry compensation"):
        saga_retry_step(saga_id=saga.pk, actor=operator, reason=REASON)
    saga = completed()
    with pytest.raises(SagaActionRefused, match="completed"):
        saga_mark_step_done(saga_id=saga.pk, actor=operator, reason=REASON, evidence=EVIDENCE)


# ---------------------------------------------------------------------------
# What each action does.
# ---------------------------------------------------------------------------


def test_retry_step_sends_a_new_attempt_with_the_same_key_and_the_saga_continues(catalog, operator):
    saga = stuck()
    first = SagaStep.objects.get(saga=saga, step="charge_payment", attempt=1)

    saga_retry_step(saga_id=saga.pk, actor=operator, reason=REASON)

    saga.refresh_from_db()
    assert not saga.stuck and saga.stuck_reason == "" and saga.stuck_since is None
    assert (saga.state, saga.current_step, saga.attempt) == (SagaState.RUNNING, "charge_payment", 4)
    assert saga.step_deadline > timezone.now()
    retry = SagaStep.objects.get(saga=saga, step="charge_payment", attempt=4)
    assert retry.outcome == Outcome.PENDING
    assert retry.idempotency_key == first.idempotency_key == step_key(saga.pk, "charge_payment")
    command = OutboxMessage.objects.get(message_id=retry.command_message_id)
    assert command.headers["idempotency_key"] == first.idempotency_key and command.headers["attempt"] == 4

    reply(saga, Outcome.TECHNICAL_FAILURE, attempt=3)  # a late answer to the old attempt
    assert saga.attempt == 4 and not saga.stuck
    reply(saga)  # the retry succeeds
    assert (saga.state, saga.current_step) == (SagaState.RUNNING, "reserve_stock")


def test_retried_step_that_fails_again_is_flagged_stuck_again(catalog, operator):
    saga = stuck()
    saga_retry_step(saga_id=saga.pk, actor=operator, reason=REASON)
    reply(saga, Outcome.TECHNICAL_FAILURE, error="still down")
    assert saga.stuck and "still down" in saga.stuck_reason


def test_compensating_a_stuck_saga_undoes_the_step_that_never_answered_and_refuses_it_later(catalog, operator):
    saga = stuck()
    lost_command = OutboxMessage.objects.filter(correlation_id=str(saga.pk), type="charge_payment").last()

    saga_compensate(saga_id=saga.pk, actor=operator, reason=REASON)

    saga.refresh_from_db()
    assert (saga.state, saga.current_step, saga.phase) == (SagaState.COMPENSATING, "charge_payment", "compensation")
    assert "charge_payment" in saga.completed_steps
    assert not SagaStep.objects.filter(saga=saga, phase=Phase.FORWARD, outcome=Outcome.PENDING).exists()
    settle()  # refund (nothing charged: a voided tombstone), then the order is cancelled
    saga.refresh_from_db()
    order = Order.objects.get(saga_id=saga.pk)
    assert saga.state == SagaState.COMPENSATED
    assert order.status == Order.Status.CANCELLED and order.cancel_reason == "cancelled by an operator"
    assert Payment.objects.get(order_id=order.pk).status == Payment.Status.VOIDED

    # The lost charge command turns up after all: the tombstone stops it before the gateway.
    deliver(signed({**sent_envelope(lost_command), "message_id": str(uuid.uuid4())}))  # a copy the system sent
    assert not GatewayCharge.objects.filter(kind="charge").exists()
    assert Payment.objects.get(order_id=order.pk).status == Payment.Status.VOIDED
    saga.refresh_from_db()
    assert saga.state == SagaState.COMPENSATED


def test_compensating_a_saga_with_a_step_in_flight_waits_for_its_answer(catalog, operator):
    saga = running()
    saga_compensate(saga_id=saga.pk, actor=operator, reason=REASON)
    saga.refresh_from_db()
    assert saga.cancel_requested and saga.state == SagaState.RUNNING and saga.attempt == 1
    assert "when charge_payment attempt 1 answers" in AuditLog.objects.get(saga=saga).outcome

    reply(saga)  # the charge went through: now it is compensated along with the order
    assert (saga.state, saga.current_step, saga.phase) == (SagaState.COMPENSATING, "charge_payment", "compensation")


def test_compensating_again_while_waiting_is_refused(catalog, operator):
    saga = running()
    saga_compensate(saga_id=saga.pk, actor=operator, reason=REASON)
    with pytest.raises(SagaActionRefused, match="already requested"):
        saga_compensate(saga_id=saga.pk, actor=operator, reason=REASON)


def test_retry_compensation_runs_the_failed_compensation_again_with_its_key(catalog, operator):
    saga = failed()
    attempts = saga.attempt

    saga_retry_compensation(saga_id=saga.pk, actor=operator, reason=REASON)

    saga.refresh_from_db()
    assert (saga.state, saga.current_step, saga.attempt) == (SagaState.COMPENSATING, "charge_payment", attempts + 1)
    assert saga.finished_at is None
    retry = SagaStep.objects.get(saga=saga, phase=Phase.COMPENSATION, attempt=attempts + 1)
    assert retry.idempotency_key == step_key(saga.pk, "charge_payment", compensation=True)
    reply(saga)  # refunded
    assert (saga.state, saga.current_step) == (SagaState.COMPENSATING, "create_order")
    reply(saga)  # order cancelled
    assert saga.state == SagaState.COMPENSATED


def _charged_in_the_console(amount: int = 4500) -> str:
    """A charge an operator makes in the provider's console, outside the saga's keys."""
    return (
        FakeGateway()
        .charge(idempotency_key=f"console:{uuid.uuid4()}", amount=amount, currency="EUR", token="tok_visa")
        .transaction_id
    )


def test_mark_done_by_hand_records_the_evidence_in_the_participant_and_continues_forward(catalog, operator):
    saga = stuck()
    charge_id = _charged_in_the_console()
    evidence = f"charged {charge_id} in the provider's console"

    saga_mark_step_done(saga_id=saga.pk, actor=operator, reason=REASON, evidence=evidence)

    saga.refresh_from_db()
    assert (saga.current_step, saga.attempt, saga.stuck) == ("charge_payment", 4, False)
    manual = SagaStep.objects.get(saga=saga, step="charge_payment", attempt=4)
    command = OutboxMessage.objects.get(message_id=manual.command_message_id)
    assert command.headers["manual"] == {"by": "olga", "reason": REASON, "evidence": evidence}
    assert "evidence: " + evidence in SagaEvent.objects.get(saga=saga, kind="operator_mark_step_done").detail
    settle()  # the participant records it; the saga runs to its end

    saga.refresh_from_db()
    assert SagaStep.objects.get(pk=manual.pk).outcome == Outcome.MANUAL
    assert saga.state == SagaState.COMPLETED
    recorded = PaymentStepOutcome.objects.get(step_key=step_key(saga.pk, "charge_payment"))
    assert (recorded.outcome, recorded.evidence, recorded.decided_by) == ("manual", evidence, "olga")
    order = Order.objects.get(saga_id=saga.pk)
    assert Payment.objects.get(order_id=order.pk).provider_charge_id == charge_id
    assert list(LedgerEntry.objects.filter(order_id=order.pk).values_list("kind", "amount", "provider_reference")) == [
        ("charge", 4500, charge_id)
    ]
    assert not GatewayCharge.objects.filter(idempotency_key__startswith=f"pay:{saga.pk}").exists()
    reply(saga, Outcome.SUCCESS, attempt=3)  # the old attempt answers late: ignored
    assert saga.state == SagaState.COMPLETED


def test_a_copy_in_flight_when_the_step_is_done_by_hand_changes_nothing(catalog, operator):
    saga = running()
    in_flight = OutboxMessage.objects.get(correlation_id=str(saga.pk), type="charge_payment")
    charge_id = _charged_in_the_console()
    saga_mark_step_done(saga_id=saga.pk, actor=operator, reason=REASON, evidence=f"charged {charge_id}")
    by_hand = OutboxMessage.objects.filter(correlation_id=str(saga.pk), type="charge_payment").last()
    # The record by hand is handled first (in the operator's process, after the commit)...
    OutboxMessage.objects.filter(pk=by_hand.pk).update(published_at=timezone.now())
    deliver(sent_envelope(by_hand))
    # ...then the copy that was in flight: it answers the recorded outcome, without the gateway.
    OutboxMessage.objects.filter(pk=in_flight.pk).update(published_at=timezone.now())
    deliver(sent_envelope(in_flight))
    settle()

    saga.refresh_from_db()
    assert saga.state == SagaState.COMPLETED
    assert not GatewayCharge.objects.filter(idempotency_key__startswith=f"pay:{saga.pk}").exists()
    assert SagaStep.objects.get(saga=saga, step="charge_payment", attempt=1).outcome == Outcome.SUPERSEDED


def test_a_record_by_hand_the_books_cannot_act_on_is_refused_and_the_saga_waits_again(catalog, operator):
    saga = stuck()
    saga_mark_step_done(saga_id=saga.pk, actor=operator, reason=REASON, evidence="charged by phone")
    settle()
    saga.refresh_from_db()
    assert saga.stuck and "could not be recorded as done by hand" in saga.stuck_reason
    assert (saga.state, saga.current_step) == (SagaState.RUNNING, "charge_payment")
    assert (
        not PaymentStepOutcome.objects.exclude(outcome="").filter(step_key=step_key(saga.pk, "charge_payment")).exists()
    )
    assert not Payment.objects.exists()


def test_mark_done_of_the_last_step_completes_the_saga_without_a_second_email(catalog, operator, mailoutbox):
    saga = stuck_past_pivot()
    saga_mark_step_done(saga_id=saga.pk, actor=operator, reason=REASON, evidence="email sent by hand")
    settle()
    saga.refresh_from_db()
    assert saga.state == SagaState.COMPLETED and saga.finished_at is not None and not saga.stuck
    order = Order.objects.get(saga_id=saga.pk)
    assert order.status == Order.Status.CONFIRMED and mailoutbox == []
    assert order.notifications.get().body == "(told by an operator) email sent by hand"


def test_mark_done_of_a_failed_compensation_continues_the_compensation(catalog, operator):
    saga = failed()
    saga_mark_step_done(saga_id=saga.pk, actor=operator, reason=REASON, evidence=EVIDENCE)
    saga.refresh_from_db()
    assert (saga.state, saga.current_step, saga.finished_at) == (SagaState.COMPENSATING, "charge_payment", None)
    settle()
    saga.refresh_from_db()
    assert saga.compensated_steps == ["charge_payment", "create_order"]
    assert saga.state == SagaState.COMPENSATED
    recorded = PaymentStepOutcome.objects.get(step_key=step_key(saga.pk, "charge_payment", compensation=True))
    assert (recorded.outcome, recorded.evidence) == ("manual", EVIDENCE)


def test_a_reason_is_required_and_a_missing_one_is_audited(catalog, operator):
    saga = stuck()
    with pytest.raises(SagaActionRefused, match="reason is required"):
        saga_retry_step(saga_id=saga.pk, actor=operator, reason="   ")
    with pytest.raises(SagaActionRefused, match="evidence is required"):
        saga_mark_step_done(saga_id=saga.pk, actor=operator, reason=REASON, evidence="")
    assert list(AuditLog.objects.filter(saga=saga).values_list("outcome", flat=True)) == [
        "refused: evidence is required: say what was done by hand and where it can be checked",
        "refused: a reason is required",
    ]
    saga.refresh_from_db()
    assert saga.stuck and saga.attempt == 3


def test_a_reason_or_evidence_over_the_limit_is_refused_and_audited_cut_to_it(catalog, operator):
    from console.audit import OPERATOR_TEXT_MAX

    saga = stuck()
    with pytest.raises(SagaActionRefused, match=f"at most {OPERATOR_TEXT_MAX} characters"):
        saga_retry_step(saga_id=saga.pk, actor=operator, reason="r" * 1_000_000)
    with pytest.raises(SagaActionRefused, match=f"at most {OPERATOR_TEXT_MAX} characters"):
        saga_mark_step_done(saga_id=saga.pk, actor=operator, reason=REASON, evidence="e" * (OPERATOR_TEXT_MAX + 1))
    dead = DeadLetter.objects.create(consumer="payments", message_id=str(uuid.uuid4()), envelope={}, reason="x")
    with pytest.raises(SagaActionRefused, match=f"at most {OPERATOR_TEXT_MAX} characters"):
        dead_letter_replay_by_operator(dead_letter_id=dead.pk, actor=operator, reason="r" * 1_000_000)
    assert [len(reason) for reason in AuditLog.objects.order_by("id").values_list("reason", flat=True)] == [
        OPERATOR_TEXT_MAX,
        len(REASON),
        OPERATOR_TEXT_MAX,
    ]
    saga.refresh_from_db()
    assert saga.stuck and saga.attempt == 3
    dead.refresh_from_db()
    assert dead.status == DeadLetter.Status.DEAD


def test_an_action_decided_on_a_stale_page_is_refused(catalog, operator):
    saga = stuck()
    position = saga_position(saga)
    saga_mark_step_done(saga_id=saga.pk, actor=operator, reason=REASON, evidence=EVIDENCE)
    # A second operator, looking at the page loaded before, marks "the" step done too.
    with pytest.raises(SagaActionRefused, match="moved on since the page was loaded"):
        saga_mark_step_done(
            saga_id=saga.pk, actor=operator, reason=REASON, evidence=EVIDENCE, expected_position=position
        )
    saga.refresh_from_db()
    assert (saga.current_step, saga.attempt) == ("charge_payment", 4)


def _dead_letter(saga: SagaInstance, *, attempt: int | None = None, **fields) -> DeadLetter:
    """The dead letter of an attempt of the saga's current step (by default its current one)."""
    saga.refresh_from_db()
    step = SagaStep.objects.get(saga=saga, step=saga.current_step, phase=saga.phase, attempt=attempt or saga.attempt)
    command = OutboxMessage.objects.get(message_id=step.command_message_id)
    return DeadLetter.objects.create(
        consumer="payments",
        message_id=str(command.message_id),
        type=command.type,
        correlation_id=str(saga.pk),
        envelope=sent_envelope(command),
        reason="GatewayUnavailable: gateway answered 503",
        attempts=3,
        **fields,
    )


def test_replaying_a_dead_letter_requeues_it_and_is_audited_on_its_saga(catalog, operator):
    saga = stuck()
    dead = _dead_letter(saga)
    OutboxMessage.objects.update(published_at=timezone.now())

    message = dead_letter_replay_by_operator(dead_letter_id=dead.pk, actor=operator, reason=REASON)

    dead.refresh_from_db()
    assert dead.status == DeadLetter.Status.REPLAYED and dead.replay_count == 1
    assert str(message.message_id) == dead.message_id and message.published_at is None
    audit = AuditLog.objects.get(target=f"deadletter:{dead.pk}")
    assert (audit.saga_id, audit.action, audit.actor_name, audit.reason) == (
        saga.pk,
        "replay_dead_letter",
        "olga",
        REASON,
    )
    assert "replay #1" in audit.outcome


def test_a_dead_letter_that_cannot_be_replayed_is_refused_and_audited(catalog, operator):
    dead = DeadLetter.objects.create(
        consumer="payments", message_id="", envelope="not an envelope", reason="poison", poison=True
    )
    with pytest.raises(SagaActionRefused, match="no valid message id"):
        dead_letter_replay_by_operator(dead_letter_id=dead.pk, actor=operator, reason=REASON)
    with pytest.raises(SagaActionRefused, match="reason is required"):
        dead_letter_replay_by_operator(dead_letter_id=dead.pk, actor=operator, reason="")
    outcomes = list(AuditLog.objects.filter(target=f"deadletter:{dead.pk}").values_list("outcome", flat=True))
    assert outcomes == [
        "refused: a reason is required",
        "refused: this dead letter has no valid message id; it cannot be replayed",
    ]
    dead.refresh_from_db()
    assert dead.status == DeadLetter.Status.DEAD


def test_the_audit_log_is_append_only_in_the_database(catalog, operator):
    saga = stuck()
    saga_retry_step(saga_id=saga.pk, actor=operator, reason=REASON)
    audit = AuditLog.objects.get(saga=saga)
    for change in (
        lambda: AuditLog.objects.filter(pk=audit.pk).update(outcome="nothing happened"),
        lambda: AuditLog.objects.filter(pk=audit.pk).delete(),
    ):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            change()
    assert AuditLog.objects.get(pk=audit.pk).outcome == audit.outcome


def test_the_operators_group_is_created_by_the_migration_with_each_action_permission():
    group = Group.objects.get(name=OPERATORS_GROUP)
    granted = {(p.content_type.app_label, p.codename) for p in group.permissions.select_related("content_type")}
    assert granted == set(OPERATOR_PERMISSIONS)
    for permission in [*ACTION_PERMISSIONS.values(), REPLAY_PERMISSION]:
        assert tuple(permission.split(".")) in granted
    assert operators_group_ensure(apps) == group  # idempotent
