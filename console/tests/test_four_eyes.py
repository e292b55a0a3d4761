"""Four eyes on money: an operator's action that moves money waits for a second operator, who
must be someone else; approving runs it once, even when two approve at the same moment; every
request, decision and refusal is in the audit log. The money is read where it lands: the fake
gateway's books and the payment ledger."""

import threading
import time

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.db import connection, connections
from django.db.models import Sum
from django.urls import reverse

from common.faults import faults_clear, faults_set
from console import approvals
from console.approvals import approval_approve, approval_reject
from console.four_eyes import ApprovalRequested
from console.models import ApprovalRequest, AuditLog
from console.operations import saga_compensate, saga_mark_step_done, saga_retry_compensation
from console.operators import operators_group_ensure
from orders.models import Order
from outbox.dispatch import relay_sends
from payments.gateway import FakeGateway
from payments.models import GatewayCharge, LedgerEntry
from payments.models import StepOutcome as PaymentStepOutcome
from sagas.exceptions import SagaActionRefused
from sagas.keys import step_key
from sagas.models import SagaEvent, SagaInstance, SagaState
from testing.saga_states import fail_until_flagged, make_catalog, place, reply, settle

REASON = "the gateway's refund outage is over (INC-77)"
QUANTITY = 11  # one more than the stock: out of stock after the charge, so the charge is refunded
AMOUNT = 4500 * QUANTITY


@pytest.fixture(autouse=True)
def four_eyes(settings):
    settings.FOUR_EYES_ENABLED = True
    settings.FOUR_EYES_MIN_AMOUNT = 0
    yield
    faults_clear()


def _operator(name: str):
    user = get_user_model().objects.create_user(name, password="pw", is_staff=True)
    user.groups.add(operators_group_ensure(apps))
    return user


@pytest.fixture
def olga():
    return _operator("olga")


@pytest.fixture
def piet():
    return _operator("piet")


def refund_failed() -> SagaInstance:
    """A saga whose customer was really charged and whose refund failed: it waits for an
    operator to retry the refund."""
    make_catalog()
    saga = place(quantity=QUANTITY)
    faults_set(gateway_refund_transient=1.0)
    settle()  # charged at the gateway, out of stock, the refund answers 503
    faults_clear()
    saga = fail_until_flagged(saga)
    assert (saga.state, saga.current_step) == (SagaState.FAILED, "charge_payment")
    assert _charged(saga) == AMOUNT and _refunded(saga) == 0
    return saga


def _charged(saga: SagaInstance) -> int:
    return _gateway_sum(saga, GatewayCharge.Kind.CHARGE)


def _refunded(saga: SagaInstance) -> int:
    return _gateway_sum(saga, GatewayCharge.Kind.REFUND)


def _gateway_sum(saga: SagaInstance, kind: str) -> int:
    rows = GatewayCharge.objects.filter(kind=kind, succeeded=True, idempotency_key__contains=str(saga.pk))
    return rows.aggregate(total=Sum("amount"))["total"] or 0


def _ledger(saga: SagaInstance) -> list[tuple[str, int]]:
    order = Order.objects.get(saga_id=saga.pk)
    return sorted(LedgerEntry.objects.filter(order_id=order.pk).values_list("kind", "amount"))


def _request_retry(saga: SagaInstance, actor) -> ApprovalRequest:
    with pytest.raises(ApprovalRequested) as requested:
        saga_retry_compensation(saga_id=saga.pk, actor=actor, reason=REASON)
    return requested.value.request


@pytest.mark.django_db
def test_retrying_a_refund_waits_for_a_second_operator_who_runs_it_once(olga, piet):
    saga = refund_failed()
    attempt = saga.attempt

    request = _request_retry(saga, olga)

    saga.refresh_from_db()
    assert (saga.state, saga.attempt) == (SagaState.FAILED, attempt), "nothing sent before the approval"
    assert (request.status, request.requested_by, request.amount, request.currency) == ("pending", olga, AMOUNT, "EUR")
    audit = AuditLog.objects.get(action="request_approval")
    assert (audit.actor, audit.saga_id, audit.target) == (olga, saga.pk, f"approval:{request.pk}")

    approval_approve(request_id=request.pk, actor=piet, note="checked the gateway's status page")
    settle()

    request.refresh_from_db()
    saga.refresh_from_db()
    assert (request.status, request.approver, request.decided_at is not None) == ("executed", piet, True)
    assert saga.state == SagaState.COMPENSATED
    assert _refunded(saga) == AMOUNT, "the customer got their money back, once"
    assert _ledger(saga) == [("charge", AMOUNT), ("refund", AMOUNT)]
    executed = AuditLog.objects.get(action="retry_compensation")
    assert executed.actor == piet and f"request #{request.pk} by olga, approved by piet" in executed.outcome
    assert AuditLog.objects.filter(action="approve_request", actor=piet).count() == 2  # approved, then its result
    with pytest.raises(SagaActionRefused, match="already executed by piet"):
        approval_approve(request_id=request.pk, actor=_operator("paul"))


@pytest.mark.django_db
def test_a_charge_marked_done_by_hand_is_recorded_only_once_approved(olga, piet):
    make_catalog()
    saga = fail_until_flagged(place())  # stuck at charge_payment: the charge was made by phone
    charge_id = FakeGateway().charge(idempotency_key="console:1", amount=4500, currency="EUR", token="tok_visa")
    evidence = f"charged {charge_id.transaction_id} in the provider's console"

    with pytest.raises(ApprovalRequested) as requested:
        saga_mark_step_done(saga_id=saga.pk, actor=olga, reason=REASON, evidence=evidence)
    settle()
    assert _ledger(saga) == [], "nothing recorded on one operator's word"

    approval_approve(request_id=requested.value.request.pk, actor=piet)
    settle()

    saga.refresh_from_db()
    assert saga.state == SagaState.COMPLETED
    assert _ledger(saga) == [("charge", 4500)]
    recorded = PaymentStepOutcome.objects.get(step_key=step_key(saga.pk, "charge_payment"))
    assert (recorded.outcome, recorded.evidence, recorded.decided_by) == ("manual", evidence, "olga (approved by piet)")


@pytest.mark.django_db
def test_the_requester_cannot_approve_their_own_request_and_the_refusal_is_audited(olga):
    saga = refund_failed()
    request = _request_retry(saga, olga)

    with pytest.raises(SagaActionRefused, match="another operator must approve"):
        approval_approve(request_id=request.pk, actor=olga)

    request.refresh_from_db()
    assert request.status == "pending"
    refusal = AuditLog.objects.get(action="approve_request")
    assert (refusal.actor, refusal.saga_id) == (olga, saga.pk)
    assert refusal.outcome.startswith("refused: you asked for this action")
    assert SagaEvent.objects.filter(saga=saga, kind="operator_retry_compensation").count() == 0
    settle()
    assert _refunded(saga) == 0


@pytest.mark.django_db
def test_a_rejection_needs_a_reason_is_audited_and_moves_no_money(olga, piet):
    saga = refund_failed()
    request = _request_retry(saga, olga)

    with pytest.raises(SagaActionRefused, match="reason is required"):
        approval_reject(request_id=request.pk, actor=piet, reason="  ")
    approval_reject(request_id=request.pk, actor=piet, reason="the customer was refunded by bank transfer")

    request.refresh_from_db()
    assert (request.status, request.approver, request.decision_reason) == (
        "rejected",
        piet,
        "the customer was refunded by bank transfer",
    )
    assert list(AuditLog.objects.filter(action="reject_request").order_by("id").values_list("outcome", flat=True)) == [
        "refused: a reason is required to reject a request",
        "rejected retry_compensation requested by olga",
    ]
    with pytest.raises(SagaActionRefused, match="already rejected"):
        approval_approve(request_id=request.pk, actor=piet)
    settle()
    assert _refunded(saga) == 0


@pytest.mark.django_db
def test_an_approval_after_the_saga_moved_on_is_not_run(olga, piet):
    make_catalog()
    saga = place()
    reply(saga)  # charged
    saga = fail_until_flagged(saga)  # stuck at reserve_stock
    with pytest.raises(ApprovalRequested) as requested:
        saga_compensate(saga_id=saga.pk, actor=olga, reason=REASON)
    reply(saga)  # a late answer moves the saga on: reserved
    saga.refresh_from_db()
    assert saga.current_step == "create_shipment"

    with pytest.raises(SagaActionRefused, match="moved on"):
        approval_approve(request_id=requested.value.request.pk, actor=piet)

    request = ApprovalRequest.objects.get()
    assert request.status == "expired" and "moved on" in request.result
    assert AuditLog.objects.filter(action="compensate", outcome__startswith="refused: the saga moved on").exists()
    saga.refresh_from_db()
    assert saga.state == SagaState.RUNNING


@pytest.mark.django_db
def test_with_four_eyes_off_the_refund_is_retried_at_once(settings, olga):
    saga = refund_failed()
    settings.FOUR_EYES_ENABLED = False

    saga_retry_compensation(saga_id=saga.pk, actor=olga, reason=REASON)
    settle()

    assert not ApprovalRequest.objects.exists()
    assert _refunded(saga) == AMOUNT


@pytest.mark.django_db
def test_below_the_amount_threshold_one_operator_is_enough(settings, olga):
    saga = refund_failed()
    settings.FOUR_EYES_MIN_AMOUNT = AMOUNT + 1

    saga_retry_compensation(saga_id=saga.pk, actor=olga, reason=REASON)
    settle()
    assert not ApprovalRequest.objects.exists()
    assert _refunded(saga) == AMOUNT

    settings.FOUR_EYES_MIN_AMOUNT = 4500  # an order of exactly the threshold: four eyes
    other = place()  # 4500
    reply(other)
    other = fail_until_flagged(other)
    with pytest.raises(ApprovalRequested):
        saga_compensate(saga_id=other.pk, actor=olga, reason=REASON)


@pytest.mark.django_db(transaction=True)
def test_two_operators_approving_at_the_same_moment_run_it_once(olga, piet, monkeypatch, celery_worker):
    # Committed for real (two sessions): the session's worker, if it runs, would take the saga's
    # messages too, with the gateway's faults of the set-up on.
    if celery_worker.running:
        celery_worker.stop()
    with relay_sends():  # committed messages wait in the outbox for settle(), not on a broker
        _two_approvals_at_once(olga, piet, monkeypatch)


def _two_approvals_at_once(olga, piet, monkeypatch):
    saga = refund_failed()
    request = _request_retry(saga, olga)
    paul = _operator("paul")
    first_inside, release = threading.Event(), threading.Event()
    service = approvals.SERVICES["retry_compensation"]

    def held(**kwargs):
        # The first approval runs the action while it holds the request's lock, until the
        # second approval is seen waiting for that lock.
        first_inside.set()
        assert release.wait(20)
        return service(**kwargs)

    monkeypatch.setitem(approvals.SERVICES, "retry_compensation", held)
    results: dict[str, str] = {}

    def approve(user):
        try:
            with relay_sends():
                approval_approve(request_id=request.pk, actor=user)
            results[user.username] = "executed"
        except SagaActionRefused as exc:
            results[user.username] = str(exc)
        finally:
            connections.close_all()

    first = threading.Thread(target=approve, args=(piet,))
    first.start()
    assert first_inside.wait(20)
    second = threading.Thread(target=approve, args=(paul,))
    second.start()
    deadline = time.monotonic() + 20
    while not _a_session_waits_for_a_lock():
        assert time.monotonic() < deadline, "the second approval never waited for the first"
        time.sleep(0.05)
    release.set()
    first.join(30)
    second.join(30)

    assert results["piet"] == "executed"
    assert results["paul"] == f"request #{request.pk} was already executed by piet"
    assert SagaEvent.objects.filter(saga=saga, kind="operator_retry_compensation").count() == 1
    assert AuditLog.objects.filter(action="retry_compensation").count() == 1
    assert AuditLog.objects.get(action="approve_request", actor=paul).outcome.startswith("refused: request #")
    settle()
    assert _refunded(saga) == AMOUNT
    assert _ledger(saga) == [("charge", AMOUNT), ("refund", AMOUNT)]


def _a_session_waits_for_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            # The second approval's own session, not another process's (a live worker's relay
            # may wait for its lock in the same database).
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            " AND query ILIKE '%%approvalrequest%%'"
        )
        return cursor.fetchone()[0] > 0


@pytest.mark.django_db
def test_the_console_shows_the_pending_request_and_the_second_operator_approves_it(client, olga, piet):
    saga = refund_failed()
    client.force_login(olga)
    url = reverse("admin:sagas_sagainstance_action", args=[saga.pk, "retry_compensation"])
    response = client.post(url, {"reason": REASON})
    request = ApprovalRequest.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("admin:sagas_approval", args=[request.pk])

    page = client.get(reverse("admin:sagas_attention")).content.decode()
    assert 'id="count-approvals"' in page and reverse("admin:sagas_approval", args=[request.pk]) in page
    assert "€495.00" in page
    saga_page = client.get(reverse("admin:sagas_sagainstance_change", args=[saga.pk])).content.decode()
    assert f"request #{request.pk}</a>" in saga_page and "waits for a second operator" in saga_page
    client.post(reverse("admin:sagas_approval", args=[request.pk]), {"decision": "approve"})
    request.refresh_from_db()
    assert request.status == "pending", "the requester's own approval is refused"

    client.force_login(piet)
    assert "Approve and run" in client.get(reverse("admin:sagas_approval", args=[request.pk])).content.decode()
    client.post(reverse("admin:sagas_approval", args=[request.pk]), {"decision": "approve", "text": "ok"})
    request.refresh_from_db()
    assert request.status == "executed"
    settle()
    assert _refunded(saga) == AMOUNT
    listing = client.get(reverse("admin:console_approvalrequest_changelist")).content.decode()
    assert "€495.00" in listing and "executed" in listing
