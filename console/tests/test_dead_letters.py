"""Dead letters that know their saga: each is linked to its saga and marked by what it is to it
now (its current attempt, superseded, or of a finished saga); they are grouped by failure and by
saga; the current attempt's replay resumes the saga, any other is refused with why; and the list
can be emptied by discarding with a reason, audited, never deleting."""

import re

import pytest
from django.apps import apps
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from console.models import AuditLog
from console.operations import dead_letter_discard_by_operator, dead_letter_replay_by_operator
from console.operators import operators_group_ensure
from console.selectors import dashboard_summary, dead_letter_saga
from outbox.models import DeadLetter, OutboxMessage
from payments.models import LedgerEntry
from sagas.exceptions import SagaActionRefused
from sagas.models import SagaInstance, SagaState, SagaStep
from testing.messages import sent_envelope
from testing.saga_states import completed, failed, make_catalog, settle, stuck

pytestmark = pytest.mark.django_db

REASON = "gateway outage resolved (INC-42)"
LIST = "/admin/outbox/deadletter/"


@pytest.fixture
def catalog():
    return make_catalog()


@pytest.fixture
def operator():
    user = get_user_model().objects.create_user("olga", password="pw", is_staff=True)
    user.groups.add(operators_group_ensure(apps))
    return user


@pytest.fixture
def operator_client(operator) -> Client:
    client = Client()
    client.force_login(operator)
    return client


@pytest.fixture
def viewer_client() -> Client:
    """Staff who may look at sagas and dead letters, and replay them, but not discard them."""
    user = get_user_model().objects.create_user("vic", password="pw", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_sagainstance", "view_deadletter", "replay_deadletter"])
    )
    client = Client()
    client.force_login(user)
    return client


def dead_letter_of(saga: SagaInstance, *, attempt: int | None = None, consumer: str = "payments") -> DeadLetter:
    """The dead letter of an attempt of the saga's current step (its current attempt by default),
    as the consumer keeps it: the envelope as sent, the error and its class."""
    saga.refresh_from_db()
    step = SagaStep.objects.get(saga=saga, step=saga.current_step, phase=saga.phase, attempt=attempt or saga.attempt)
    command = OutboxMessage.objects.get(message_id=step.command_message_id)
    return DeadLetter.objects.create(
        consumer=consumer,
        message_id=str(command.message_id),
        type=command.type,
        correlation_id=str(saga.pk),
        envelope=sent_envelope(command),
        reason="GatewayUnavailable: gateway answered 503",
        error_class="GatewayUnavailable",
        attempts=3,
    )


def finished_saga_dead_letter() -> tuple[SagaInstance, DeadLetter]:
    saga = completed()
    command = OutboxMessage.objects.filter(correlation_id=str(saga.pk), type="charge_payment").first()
    dead = DeadLetter.objects.create(
        consumer="payments",
        message_id=str(command.message_id),
        type=command.type,
        correlation_id=str(saga.pk),
        envelope=sent_envelope(command),
        reason="ConnectionError: the gateway hung up",
        error_class="ConnectionError",
    )
    return saga, dead


def _row(page: str, dead: DeadLetter) -> str:
    found = re.search(rf'<tr[^>]*>(?:(?!</tr>).)*?value="{dead.pk}"(?:(?!</tr>).)*</tr>', page, re.S)
    assert found, f"dead letter {dead.pk} is not listed"
    return re.sub(r"<[^>]+>", " ", found.group(0))


def test_each_dead_letter_links_its_saga_and_says_what_it_is_to_it(catalog, operator_client):
    saga = stuck()
    superseded = dead_letter_of(saga, attempt=1)
    current = dead_letter_of(saga)
    finished, of_finished = finished_saga_dead_letter()
    no_saga = DeadLetter.objects.create(
        consumer="default", message_id="m-1", type="ping", envelope={"raw": "x"}, reason="bad", poison=True
    )

    page = operator_client.get(LIST).content.decode()

    assert "current attempt" in _row(page, current) and f"charge_payment (forward) #{saga.attempt}" in _row(
        page, current
    )
    assert "superseded" in _row(page, superseded) and "charge_payment (forward) #1" in _row(page, superseded)
    assert "saga finished" in _row(page, of_finished)
    assert "superseded" not in _row(page, no_saga) and "current attempt" not in _row(page, no_saga)
    assert reverse("admin:sagas_sagainstance_change", args=[saga.pk]) in page
    assert reverse("admin:sagas_sagainstance_change", args=[finished.pk]) in page
    assert f"{LIST}?saga={saga.pk}" in page

    only_current = operator_client.get(LIST, {"mark": "current attempt"}).content.decode()
    assert f'value="{current.pk}"' in only_current
    assert f'value="{superseded.pk}"' not in only_current and f'value="{of_finished.pk}"' not in only_current
    of_saga = operator_client.get(LIST, {"saga": str(saga.pk)}).content.decode()
    assert f'value="{current.pk}"' in of_saga and f'value="{superseded.pk}"' in of_saga
    assert f'value="{of_finished.pk}"' not in of_saga


def test_dead_letters_are_counted_by_failure_and_by_saga(catalog, operator_client):
    saga = stuck()
    dead_letter_of(saga, attempt=1), dead_letter_of(saga, attempt=2), dead_letter_of(saga)
    finished_saga_dead_letter()

    page = operator_client.get(LIST).content.decode()
    by_failure = re.search(r'id="dead-letters-by-failure">(.*?)</table>', page, re.S).group(1)
    rows = [re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row)).strip() for row in by_failure.split("<tr>")[2:]]
    assert rows == [
        "payments charge_payment GatewayUnavailable 3",
        "payments charge_payment ConnectionError 1",
    ]
    by_saga = re.search(r'id="dead-letters-by-saga">(.*?)</table>', page, re.S).group(1)
    assert f"saga={saga.pk}" in by_saga and ">3</a>" in by_saga


def test_replaying_the_current_attempts_dead_letter_resumes_the_stuck_saga(catalog, operator):
    saga = stuck()
    dead = dead_letter_of(saga)

    dead_letter_replay_by_operator(dead_letter_id=dead.pk, actor=operator, reason=REASON)
    settle()  # the gateway answers now

    saga.refresh_from_db()
    assert (saga.state, saga.stuck) == (SagaState.COMPLETED, False)
    order_id = int(saga.aggregate_id)
    assert list(LedgerEntry.objects.filter(order_id=order_id).values_list("kind", "amount")) == [("charge", 4500)]
    audit = AuditLog.objects.get(target=f"deadletter:{dead.pk}")
    assert audit.saga_id == saga.pk and audit.outcome.startswith("replayed")


def test_replaying_the_current_compensations_dead_letter_resumes_the_failed_saga(catalog, operator):
    saga = failed()
    dead = dead_letter_of(saga)

    dead_letter_replay_by_operator(dead_letter_id=dead.pk, actor=operator, reason=REASON)
    settle()  # the refund goes through now, then the order is cancelled

    saga.refresh_from_db()
    assert saga.state == SagaState.COMPENSATED
    net = sum(
        amount if kind == "charge" else -amount
        for kind, amount in LedgerEntry.objects.filter(order_id=int(saga.aggregate_id)).values_list("kind", "amount")
    )
    assert net == 0


def test_replaying_a_superseded_dead_letter_or_one_of_a_finished_saga_is_refused_with_why_and_audited(
    catalog, operator, operator_client
):
    saga = stuck()
    superseded = dead_letter_of(saga, attempt=1)
    finished, of_finished = finished_saga_dead_letter()
    waiting = OutboxMessage.objects.filter(published_at__isnull=True).count()

    with pytest.raises(SagaActionRefused, match=f"superseded: attempt {saga.attempt} of charge_payment"):
        dead_letter_replay_by_operator(dead_letter_id=superseded.pk, actor=operator, reason=REASON)
    replay_url = reverse("admin:sagas_deadletter_replay", args=[of_finished.pk])
    response = operator_client.post(replay_url, {"reason": REASON}, follow=True)
    assert "Replay refused — saga finished: the saga is completed" in response.content.decode()

    for dead, of in ((superseded, saga), (of_finished, finished)):
        dead.refresh_from_db()
        assert dead.status == DeadLetter.Status.DEAD
        audit = AuditLog.objects.get(target=f"deadletter:{dead.pk}")
        assert audit.saga_id == of.pk and audit.outcome.startswith("refused: ")
        assert "discard it instead" in audit.outcome
    assert OutboxMessage.objects.filter(published_at__isnull=True).count() == waiting  # nothing sent again
    page = operator_client.get(reverse("admin:sagas_sagainstance_change", args=[saga.pk])).content.decode()
    assert reverse("admin:sagas_deadletter_replay", args=[superseded.pk]) not in page


def test_discarding_with_a_reason_empties_the_list_keeps_each_letter_and_audits_it(catalog, operator_client):
    saga = stuck()
    superseded = [dead_letter_of(saga, attempt=1), dead_letter_of(saga, attempt=2)]
    _, of_finished = finished_saga_dead_letter()
    chosen = [str(dead.pk) for dead in [*superseded, of_finished]]
    assert dashboard_summary().dead_letter_count == 3

    confirm = operator_client.post(LIST, {"action": "discard", ACTION_CHECKBOX_NAME: chosen, "index": 0})
    page = confirm.content.decode()
    assert 'id="discard-form"' in page and "superseded: attempt" in page and "saga finished" in page
    hidden = dict(re.findall(r'name="(action|select_across|index|apply)" value="([^"]*)"', page))
    blank = operator_client.post(LIST, {**hidden, ACTION_CHECKBOX_NAME: chosen, "reason": " "})
    assert "This field is required." in blank.content.decode()
    assert DeadLetter.objects.filter(status=DeadLetter.Status.DEAD).count() == 3

    done = operator_client.post(LIST, {**hidden, ACTION_CHECKBOX_NAME: chosen, "reason": "superseded"}, follow=True)
    assert "3 dead letter(s) discarded." in done.content.decode()
    assert dashboard_summary().dead_letter_count == 0
    assert DeadLetter.objects.count() == 3  # kept, never deleted
    for dead in [*superseded, of_finished]:
        dead.refresh_from_db()
        assert (dead.status, dead.discarded_by, dead.discard_reason) == ("discarded", "olga", "superseded")
        assert dead.discarded_at is not None and dead.discarded_at <= timezone.now()
        audit = AuditLog.objects.get(target=f"deadletter:{dead.pk}")
        assert (audit.action, audit.actor_name, audit.reason) == ("discard_dead_letter", "olga", "superseded")
        assert audit.saga_id == SagaInstance.objects.get(pk=dead.correlation_id).pk
    listed = operator_client.get(reverse("admin:sagas_sagainstance_change", args=[saga.pk])).content.decode()
    assert "discarded by olga: superseded" in listed


def test_a_discarded_dead_letter_is_never_replayed_nor_discarded_again(catalog, operator):
    saga = stuck()
    dead = dead_letter_of(saga)
    dead_letter_discard_by_operator(dead_letter_id=dead.pk, actor=operator, reason="handled by hand (INC-9)")

    with pytest.raises(SagaActionRefused, match="discarded by olga: handled by hand"):
        dead_letter_replay_by_operator(dead_letter_id=dead.pk, actor=operator, reason=REASON)
    with pytest.raises(SagaActionRefused, match="was discarded already"):
        dead_letter_discard_by_operator(dead_letter_id=dead.pk, actor=operator, reason="again")
    outcomes = list(
        AuditLog.objects.filter(target=f"deadletter:{dead.pk}").order_by("id").values_list("outcome", flat=True)
    )
    assert outcomes[0].startswith("discarded charge_payment")
    assert outcomes[1].startswith("refused: this dead letter was discarded by olga")
    assert outcomes[2].startswith("refused: this dead letter was discarded already")


def test_discarding_needs_its_permission_and_a_forged_post_is_refused_and_audited(catalog, viewer_client):
    saga = stuck()
    dead = dead_letter_of(saga)
    listed = viewer_client.get(LIST).content.decode()
    assert 'value="replay"' in listed and 'value="discard"' not in listed

    forged = viewer_client.post(
        LIST, {"action": "discard", ACTION_CHECKBOX_NAME: [str(dead.pk)], "index": 0, "apply": "1", "reason": "x"}
    )

    assert forged.status_code == 403
    dead.refresh_from_db()
    assert dead.status == DeadLetter.Status.DEAD
    audit = AuditLog.objects.get(target=f"deadletter:{dead.pk}")
    assert (audit.actor_name, audit.action, audit.saga_id) == ("vic", "discard_dead_letter", saga.pk)
    assert audit.outcome == "refused: permission denied (needs outbox.discard_deadletter)"


def test_a_dead_lettered_reply_is_marked_by_the_attempt_it_answers_and_its_replay_moves_the_saga_on(catalog, operator):
    from unittest import mock

    from django.conf import settings
    from django.db import OperationalError

    from outbox.consumer import deliver
    from testing.saga_states import place

    saga = place()
    command = OutboxMessage.objects.get(published_at__isnull=True, type="charge_payment")
    OutboxMessage.objects.filter(pk=command.pk).update(published_at=timezone.now())
    deliver(sent_envelope(command))  # charged; the reply waits
    answer = OutboxMessage.objects.get(published_at__isnull=True, type="saga_reply")
    OutboxMessage.objects.filter(pk=answer.pk).update(published_at=timezone.now())
    with mock.patch("sagas.orchestrator._apply", side_effect=OperationalError("the database went away")):
        assert deliver(sent_envelope(answer), attempt=settings.OUTBOX_MAX_ATTEMPTS - 1) == "dead_letter"
    dead = DeadLetter.objects.get(message_id=str(answer.message_id))

    link = dead_letter_saga(dead)
    assert (link.saga_id, link.step, link.attempt, link.mark) == (saga.pk, "charge_payment", 1, "current attempt")

    dead_letter_replay_by_operator(dead_letter_id=dead.pk, actor=operator, reason=REASON)
    settle()
    saga.refresh_from_db()
    assert saga.state == SagaState.COMPLETED
    assert list(LedgerEntry.objects.filter(order_id=int(saga.aggregate_id)).values_list("kind", "amount")) == [
        ("charge", 4500)
    ]
