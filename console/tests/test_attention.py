"""The operators' landing page ("needs attention"), the one search box, and refusals that say
what is missing and leave a trace."""

from datetime import timedelta

import pytest
from django.apps import apps
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from common.heartbeat import BEAT, WORKER, Heartbeat, Liveness
from console.models import AuditLog
from console.operators import operators_group_ensure
from orders.models import Order
from outbox.models import DeadLetter, OutboxMessage
from payments.models import LedgerEntry, Payment
from sagas.keys import step_key
from sagas.models import Outcome, SagaInstance
from shipping.models import Shipment
from testing.messages import sent_envelope
from testing.saga_states import completed, make_catalog, place, reply, stuck

pytestmark = pytest.mark.django_db

ATTENTION = "/admin/sagas/sagainstance/attention/"
CHANGELIST = "/admin/sagas/sagainstance/"


def _saga_url(saga: SagaInstance) -> str:
    return reverse("admin:sagas_sagainstance_change", args=[saga.pk])


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


@pytest.fixture
def viewer_client() -> Client:
    """Staff who may look at sagas and dead letters but not repair them."""
    user = get_user_model().objects.create_user("vic", password="pw", is_staff=True)
    user.user_permissions.add(
        Permission.objects.get(codename="view_sagainstance"), Permission.objects.get(codename="view_deadletter")
    )
    client = Client()
    client.force_login(user)
    return client


def _alive(*roles: str) -> Liveness:
    return Liveness(
        processes={
            role: [Heartbeat(role=role, name=f"test-{role}", pid=1, host="h", seconds_ago=1.0)]
            for role in (WORKER, BEAT)
            if role in roles
        }
    )


@pytest.fixture
def heartbeats(monkeypatch):
    """Set what the heartbeats say, whatever worker the test session runs."""

    def set_alive(*roles: str) -> None:
        monkeypatch.setattr("console.attention.liveness", lambda: _alive(*roles))

    set_alive(WORKER, BEAT)
    return set_alive


def _page(client: Client, url: str = ATTENTION, **params) -> str:
    response = client.get(url, params)
    assert response.status_code == 200, response.status_code
    return response.content.decode()


# ---------------------------------------------------------------------------
# Needs attention.
# ---------------------------------------------------------------------------


def test_needs_attention_is_linked_first_from_the_admin_index(catalog, operator_client):
    index = _page(operator_client, "/admin/")
    assert index.index('id="needs-attention-link"') < index.index('id="saga-dashboard-link"')
    assert ATTENTION in index


def test_with_the_worker_stopped_the_page_says_so_and_never_that_nothing_is_stuck(catalog, operator_client, heartbeats):
    """Defect 1: the sweeper that flags overdue sagas runs on the stopped worker."""
    heartbeats(BEAT)  # no worker
    saga = place()
    SagaInstance.objects.filter(pk=saga.pk).update(step_deadline=timezone.now() - timedelta(minutes=1))
    page = _page(operator_client)
    assert 'id="processes-down"' in page and "No live worker" in page
    assert "No Celery worker has renewed its heartbeat" in page
    assert 'id="all-clear"' not in page and "Nothing is stuck" not in page
    assert 'id="count-overdue"' in page and str(saga.pk)[:8] in page
    # The dashboard no longer says "Nothing is stuck" in green above sagas past their deadline.
    dashboard = _page(operator_client, "/admin/sagas/sagainstance/dashboard/")
    assert "Nothing is stuck" not in dashboard


def test_without_beat_the_banner_names_beat(catalog, operator_client, heartbeats):
    heartbeats(WORKER)
    page = _page(operator_client)
    assert "No live beat" in page and "No beat has renewed its heartbeat" in page


def test_all_clear_only_when_processes_live_and_nothing_waits(catalog, operator_client, heartbeats):
    completed()
    page = _page(operator_client)
    assert 'id="all-clear"' in page and 'id="processes-down"' not in page


def test_retrying_sagas_are_counted_listed_and_linked_before_they_are_stuck(catalog, operator_client, heartbeats):
    """Defect 2: retries piling up showed as "Nothing is stuck"."""
    retrying = place()
    reply(retrying, Outcome.TECHNICAL_FAILURE, error="CarrierUnavailable: 503")
    retrying.refresh_from_db()
    assert retrying.attempt == 2 and not retrying.stuck
    flagged = stuck()
    healthy = place()
    page = _page(operator_client)
    assert 'id="all-clear"' not in page
    counts = {kind: _count(page, kind) for kind in ("stuck", "retrying", "overdue", "failed")}
    assert counts == {"stuck": 1, "retrying": 1, "overdue": 0, "failed": 0}
    retrying_list = page[page.index('id="list-retrying"') :]
    retrying_list = retrying_list[: retrying_list.index("</table>")]
    assert _saga_url(retrying) in retrying_list and _saga_url(flagged) not in retrying_list
    assert _saga_url(healthy) not in page
    # Each count links to the list it counts.
    listed = _page(operator_client, CHANGELIST, attention="retrying")
    assert str(retrying.pk)[:8] in listed and str(flagged.pk)[:8] not in listed and str(healthy.pk)[:8] not in listed
    listed = _page(operator_client, CHANGELIST, attention="stuck")
    assert str(flagged.pk)[:8] in listed and str(retrying.pk)[:8] not in listed


def test_dead_letters_and_open_violations_are_counted_and_linked(catalog, operator_client, heartbeats):
    from audit.models import Violation

    saga = stuck()
    _dead_letter(saga)
    now = timezone.now()
    Violation.objects.create(
        kind=Violation.Kind.CONFIRMED_REFUNDED,
        key=f"order:{saga.aggregate_id}",
        involved={"order": int(saga.aggregate_id)},
        detail="refunded 4500",
        first_seen=now,
        last_seen=now,
    )
    page = _page(operator_client)
    assert _count(page, "dead-letters") == 1 and _count(page, "violations") == 1
    assert reverse("admin:outbox_deadletter_changelist") + "?status__exact=dead" in page
    assert reverse("admin:audit_violation_changelist") + "?resolved=no" in page
    # The violation's line leads to its order's saga.
    assert f'{CHANGELIST}?q={saga.aggregate_id}"' in page


def test_needs_attention_needs_the_view_permission(catalog):
    user = get_user_model().objects.create_user("nina", password="pw", is_staff=True)
    client = Client()
    client.force_login(user)
    response = client.get(ATTENTION)
    assert response.status_code == 403
    assert "sagas.view_sagainstance" in response.content.decode()


def _count(page: str, kind: str) -> int:
    row = page[page.index(f'id="count-{kind}"') :]
    row = row[: row.index("</tr>")]
    return int(row.split('class="ops-number')[1].split(">")[1].split("<")[0])


def _dead_letter(saga: SagaInstance) -> DeadLetter:
    command = OutboxMessage.objects.filter(correlation_id=str(saga.pk)).first()
    return DeadLetter.objects.create(
        consumer="payments",
        message_id=str(command.message_id),
        type=command.type,
        correlation_id=str(saga.pk),
        envelope=sent_envelope(command),
        reason="GatewayUnavailable: gateway answered 503",
    )


# ---------------------------------------------------------------------------
# One search box.
# ---------------------------------------------------------------------------


def _lands_on(client: Client, term: str) -> str:
    response = client.get(CHANGELIST, {"q": term})
    assert response.status_code == 302, f"{term!r} answered {response.status_code}"
    return response["Location"]


def test_the_search_box_is_on_the_needs_attention_view_and_the_saga_list(catalog, operator_client, heartbeats):
    assert 'id="console-search"' in _page(operator_client)
    assert 'name="q"' in _page(operator_client, CHANGELIST)


def test_search_by_email_in_another_case_lands_on_the_saga(catalog, operator_client):
    saga = place()
    Order.objects.filter(pk=int(saga.aggregate_id)).update(customer_email="Zoe.Miller@Example.org")
    place()  # ann@example.com
    assert _lands_on(operator_client, "zoe.MILLER@example.ORG") == _saga_url(saga)
    assert _lands_on(operator_client, "MILLER") == _saga_url(saga)


def test_search_with_several_matches_lists_them(catalog, operator_client):
    sagas = [place(), place()]
    page = _page(operator_client, CHANGELIST, q="ANN@example")
    assert all(str(saga.pk)[:8] in page for saga in sagas)
    assert 'id="search-summary"' in page and "customer email" in page


def test_search_by_order_id_saga_id_and_message_id(catalog, operator_client):
    saga = place()
    other = place()
    assert _lands_on(operator_client, saga.aggregate_id) == _saga_url(saga)
    assert _lands_on(operator_client, str(saga.pk)) == _saga_url(saga)
    command = OutboxMessage.objects.filter(correlation_id=str(other.pk)).first()
    assert _lands_on(operator_client, str(command.message_id)) == _saga_url(other)
    dead = _dead_letter(saga)
    OutboxMessage.objects.filter(message_id=dead.message_id).delete()  # purged by retention
    assert _lands_on(operator_client, dead.message_id) == _saga_url(saga)


def test_search_by_payment_and_refund_reference_and_tracking_number(catalog, operator_client):
    saga = place()
    place()
    order_id = int(saga.aggregate_id)
    key = step_key(saga.pk, "charge_payment")
    payment = Payment.objects.create(
        order_id=order_id,
        idempotency_key=key,
        saga_id=saga.pk,
        step="charge_payment",
        provider_charge_id="ch_test_1",
        amount=4500,
        currency="EUR",
        status=Payment.Status.CHARGED,
    )
    for kind, reference in ((LedgerEntry.Kind.CHARGE, "ch_test_1"), (LedgerEntry.Kind.REFUND, "re_test_42")):
        LedgerEntry.objects.create(
            payment=payment,
            order_id=order_id,
            kind=kind,
            amount=4500,
            currency="EUR",
            idempotency_key=f"{key}:{kind}",
            provider_reference=reference,
        )
    Shipment.objects.create(
        order_id=order_id,
        idempotency_key=step_key(saga.pk, "create_shipment"),
        saga_id=saga.pk,
        step="create_shipment",
        status=Shipment.Status.CREATED,
        carrier_reference="shp_1",
        tracking_number="TRK123456",
    )
    assert _lands_on(operator_client, "ch_test_1") == _saga_url(saga)
    assert _lands_on(operator_client, "re_test_42") == _saga_url(saga)
    assert _lands_on(operator_client, "TRK123456") == _saga_url(saga)


def test_search_by_idempotency_key_as_sent_and_by_step_key(catalog, operator_client):
    saga = place()
    place()
    SagaInstance.objects.filter(pk=saga.pk).update(idempotency_key="api:7:checkout-4711")
    assert _lands_on(operator_client, "checkout-4711") == _saga_url(saga)
    assert _lands_on(operator_client, "api:7:checkout-4711") == _saga_url(saga)
    assert _lands_on(operator_client, step_key(saga.pk, "charge_payment")) == _saga_url(saga)


def test_a_search_that_finds_nothing_says_so(catalog, operator_client):
    place()
    page = _page(operator_client, CHANGELIST, q="nobody-at-all")
    assert "0 saga(s)" in page


# ---------------------------------------------------------------------------
# Refusals (defect 7).
# ---------------------------------------------------------------------------


def test_a_refused_action_gets_an_admin_page_naming_the_missing_permission(catalog, viewer_client):
    saga = stuck()
    response = viewer_client.get(reverse("admin:sagas_sagainstance_action", args=[saga.pk, "retry_step"]))
    assert response.status_code == 403
    page = response.content.decode()
    assert 'id="permission-denied"' in page and "sagas.retry_saga" in page
    assert "Can retry a saga" in page and 'id="site-name"' in page  # the admin's header


def test_a_forged_bulk_post_without_the_permission_is_refused_visibly_and_audited(catalog, viewer_client):
    saga = stuck()
    response = viewer_client.post(
        CHANGELIST,
        {"action": "retry_selected", ACTION_CHECKBOX_NAME: [saga.pk], "index": 0, "apply": "1", "reason": "x"},
    )
    assert response.status_code == 403
    assert "sagas.retry_saga" in response.content.decode()
    saga.refresh_from_db()
    assert saga.stuck and saga.attempt == 3
    audit = AuditLog.objects.get(actor_name="vic")
    assert audit.saga_id == saga.pk and audit.target == "bulk retry_selected"
    assert audit.outcome.startswith("refused: permission denied (needs sagas.retry_saga)")


def test_a_forged_bulk_replay_without_the_permission_is_refused_and_audited_with_its_saga(catalog, viewer_client):
    saga = stuck()
    dead = _dead_letter(saga)
    response = viewer_client.post(
        reverse("admin:outbox_deadletter_changelist"),
        {"action": "replay", ACTION_CHECKBOX_NAME: [dead.pk], "index": 0, "apply": "1", "reason": "x"},
    )
    assert response.status_code == 403 and "outbox.replay_deadletter" in response.content.decode()
    dead.refresh_from_db()
    assert dead.status == DeadLetter.Status.DEAD
    audit = AuditLog.objects.get(actor_name="vic")
    assert audit.saga_id == saga.pk and audit.outcome.startswith("refused: permission denied")


def test_a_refused_replay_names_its_saga_in_the_audit_log(catalog, viewer_client):
    saga = stuck()
    dead = _dead_letter(saga)
    response = viewer_client.post(reverse("admin:sagas_deadletter_replay", args=[dead.pk]), {"reason": "try"})
    assert response.status_code == 403 and "outbox.replay_deadletter" in response.content.decode()
    audit = AuditLog.objects.get(target=f"deadletter:{dead.pk}")
    assert audit.saga_id == saga.pk and audit.outcome.startswith("refused: permission denied")
