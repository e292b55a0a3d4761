"""Bulk repairs: the selection frozen when the operator confirms, a canary judged before the
rest, the rest at its rate, and a progress page with each saga's outcome.

The canary's tests run the real system: orders placed against a carrier that is down, their
sagas stuck at create_shipment in the real worker, and the repair advanced by the console's
Celery task in that worker, as beat runs it. The others handle messages in the test process."""

import itertools
import re
import time

import pytest
from django.apps import apps
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from django_celery_beat.models import PeriodicTask

from common.faults import faults_clear, faults_set
from console.bulk_repairs import ACTIVE, bulk_repair_advance, bulk_repair_create, bulk_repair_progress
from console.models import AuditLog, BulkRepair, BulkRepairItem
from console.operators import operators_group_ensure
from console.tasks import advance_bulk_repairs
from devtools.processes import wait_for
from orders.models import Order
from orders.services import Customer, LineInput, order_place
from payments.models import LedgerEntry
from sagas.models import SagaInstance, SagaState, SagaStep
from shipping.models import Shipment
from testing.saga_states import ADDRESS, completed, make_catalog, settle, stuck

REASON = "carrier back (INC-9)"
CHANGELIST = "/admin/sagas/sagainstance/"
Status = BulkRepairItem.Status


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


def _run_in_process(repair: BulkRepair, *, timeout: float = 30) -> BulkRepair:
    """Advance the repair as beat would, handling the sagas' messages in this process."""
    deadline = time.monotonic() + timeout
    while not bulk_repair_progress(repair_id=repair.pk).finished:
        assert time.monotonic() < deadline, f"the repair did not finish: {repair.status_detail}"
        repair = bulk_repair_advance(repair_id=repair.pk)
        settle()
        time.sleep(0.01)
    return BulkRepair.objects.get(pk=repair.pk)


def _items(repair: BulkRepair) -> list[BulkRepairItem]:
    return list(repair.items.order_by("position"))


# ---------------------------------------------------------------------------
# The frozen selection and the progress page (messages handled in this process).
# ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_saga_stuck_after_the_operator_confirmed_is_not_repaired(operator_client):
    make_catalog()
    selected = [stuck(), stuck()]
    url = CHANGELIST + "?attention=stuck"
    # "Select all across the filter": the confirmation page freezes the sagas it shows.
    confirm = operator_client.post(
        url, {"action": "retry_selected", "select_across": "1", "index": 0, ACTION_CHECKBOX_NAME: [selected[0].pk]}
    ).content.decode()
    assert "for <strong>2</strong> saga(s)" in confirm and "frozen when you confirm" in confirm
    hidden = re.findall(r'name="(action|select_across|index|apply|_selected_action)" value="([^"]*)"', confirm)
    assert ("select_across", "0") in hidden
    assert sorted(value for name, value in hidden if name == ACTION_CHECKBOX_NAME) == sorted(
        str(saga.pk) for saga in selected
    )

    latecomer = stuck()  # joins the filter while the operator reads the page

    data: dict[str, list[str]] = {}
    for name, value in hidden:
        data.setdefault(name, []).append(value)
    response = operator_client.post(url, {**data, "reason": REASON, "rate_per_minute": "600"})
    repair = BulkRepair.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("admin:sagas_bulk_repair", args=[repair.pk])
    assert {item.saga_id for item in _items(repair)} == {saga.pk for saga in selected}

    repair = _run_in_process(repair)

    assert repair.status == BulkRepair.Status.DONE
    assert [item.status for item in _items(repair)] == [Status.DONE, Status.DONE]
    for saga in selected:
        saga.refresh_from_db()
        assert saga.state == SagaState.COMPLETED
        order = Order.objects.get(pk=saga.aggregate_id)
        assert list(LedgerEntry.objects.filter(order_id=order.pk).values_list("kind", flat=True)) == ["charge"]
        assert Shipment.objects.filter(order_id=order.pk, status=Shipment.Status.CREATED).count() == 1
    latecomer.refresh_from_db()
    assert latecomer.stuck and latecomer.attempt == 3, "the saga that joined later was left alone"
    assert not SagaStep.objects.filter(saga=latecomer, attempt=4).exists()
    assert not AuditLog.objects.filter(saga=latecomer).exists()
    assert AuditLog.objects.filter(action="retry_step", reason=f"{REASON} [bulk repair {repair.pk}]").count() == 2


@pytest.mark.django_db
def test_the_progress_page_shows_each_sagas_outcome_as_it_happens(operator, operator_client):
    make_catalog()
    first, second, finished = stuck(), stuck(), completed()
    repair = bulk_repair_create(
        actor=operator,
        action="retry_step",
        reason=REASON,
        saga_ids=[first.pk, second.pk, finished.pk],
        rate_per_minute=600,
    )
    page_url = reverse("admin:sagas_bulk_repair", args=[repair.pk])

    bulk_repair_advance(repair_id=repair.pk)  # the canary is sent; its answer has not come
    fragment = operator_client.get(page_url, {"fragment": "1"}).content.decode()
    assert "<html" not in fragment and 'data-finished="0"' in fragment
    assert re.search(r"2 waiting.*1 sent, waiting for its outcome", fragment, re.S)
    assert "sent: charge_payment (forward) attempt 4" in fragment and "canary" in fragment
    running_page = operator_client.get(page_url).content.decode()
    assert "<script nonce=" in running_page and "?fragment=1" in running_page

    repair = _run_in_process(repair)

    page = operator_client.get(page_url).content.decode()
    assert [item.status for item in _items(repair)] == [Status.DONE, Status.DONE, Status.REFUSED]
    assert page.count("done: the saga completed") == 2
    assert "refused: the saga is completed; only a running or compensating saga has a step to retry" in page
    assert re.search(r"2 done.*1 refused", page, re.S) and "finished: 2 done, 1 refused" in page
    assert "<script nonce=" not in page, "a finished repair is not refreshed"
    listing = operator_client.get(reverse("admin:sagas_bulk_repairs")).content.decode()
    assert page_url in listing and REASON in listing


@pytest.mark.django_db
def test_the_sagas_after_the_canary_are_spaced_by_the_rate(operator):
    make_catalog()
    sagas = [stuck() for _ in range(4)]
    repair = bulk_repair_create(
        actor=operator, action="retry_step", reason=REASON, saga_ids=[s.pk for s in sagas], rate_per_minute=120
    )

    repair = _run_in_process(repair)

    canary, *rest = _items(repair)
    assert repair.status == BulkRepair.Status.DONE and all(item.status == Status.DONE for item in _items(repair))
    assert all(item.sent_at >= canary.finished_at for item in rest), "the rest waited for the canary"
    gaps = [(later.sent_at - earlier.sent_at).total_seconds() for earlier, later in itertools.pairwise(rest)]
    assert all(gap >= 0.5 for gap in gaps), gaps  # 120 a minute: one every half second at most
    assert all(gap < 1.5 for gap in gaps), gaps  # and not much slower
    assert SagaInstance.objects.filter(state=SagaState.COMPLETED).count() == 4


@pytest.mark.django_db
def test_an_operator_stops_a_repair_and_the_sagas_not_sent_are_not_run(operator, operator_client):
    make_catalog()
    sagas = [stuck() for _ in range(3)]
    repair = bulk_repair_create(
        actor=operator, action="retry_step", reason=REASON, saga_ids=[s.pk for s in sagas], rate_per_minute=1
    )
    while repair.items.filter(status=Status.SENT).count() + repair.items.filter(status=Status.DONE).count() < 2:
        repair = bulk_repair_advance(repair_id=repair.pk)  # the canary, then one more; the third is a minute away
        settle()
    page_url = reverse("admin:sagas_bulk_repair", args=[repair.pk])
    assert 'id="bulk-stop-form"' in operator_client.get(page_url).content.decode()

    viewer = get_user_model().objects.create_user("vic", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_sagainstance"))
    stranger = Client()
    stranger.force_login(viewer)
    stop_url = reverse("admin:sagas_bulk_repair_stop", args=[repair.pk])
    assert stranger.post(stop_url, {"reason": "mine now"}).status_code == 403
    assert AuditLog.objects.get(actor_name="vic").outcome.startswith("refused: permission denied")

    response = operator_client.post(stop_url, {"reason": "wrong filter"})
    assert response.status_code == 302
    repair = _run_in_process(BulkRepair.objects.get(pk=repair.pk))  # follows the sagas already sent
    assert repair.status == BulkRepair.Status.STOPPED and "stopped by olga: wrong filter" in repair.status_detail
    assert [item.status for item in _items(repair)] == [Status.DONE, Status.DONE, Status.NOT_RUN]
    last = SagaInstance.objects.get(pk=_items(repair)[2].saga_id)
    assert last.stuck and last.attempt == 3 and not AuditLog.objects.filter(saga=last).exists()
    assert 'id="bulk-stop-form"' not in operator_client.get(page_url).content.decode()


@pytest.mark.django_db
def test_a_requester_who_loses_the_permission_stops_the_repair(operator):
    make_catalog()
    sagas = [stuck(), stuck()]
    repair = bulk_repair_create(
        actor=operator, action="retry_step", reason=REASON, saga_ids=[s.pk for s in sagas], rate_per_minute=600
    )
    operator.groups.clear()

    repair = bulk_repair_advance(repair_id=repair.pk)

    assert repair.status == BulkRepair.Status.STOPPED and "no longer has the permission sagas.retry_saga" in (
        repair.status_detail
    )
    assert [item.status for item in _items(repair)] == [Status.NOT_RUN, Status.NOT_RUN]
    for saga in sagas:
        saga.refresh_from_db()
        assert saga.stuck and saga.attempt == 3


@pytest.mark.django_db
def test_beat_advances_bulk_repairs_every_second():
    task = PeriodicTask.objects.get(task="console.advance_bulk_repairs")
    assert task.enabled and (task.interval.every, task.interval.period) == (1, "seconds")
    assert advance_bulk_repairs() == {"repairs": 0, "advanced": 0}


# ---------------------------------------------------------------------------
# The canary, with the real worker and a carrier that is down.
# ---------------------------------------------------------------------------


def _stuck_at_the_carrier(count: int) -> list[SagaInstance]:
    make_catalog()
    faults_set(carrier_transient=1.0)
    orders = [
        order_place(
            customer=Customer(email=f"ann{n}@example.com", name="Ann"),
            lines=[LineInput(sku="SKU-A", quantity=1)],
            payment_token="tok_visa",
            shipping_address=ADDRESS,
        ).order
        for n in range(count)
    ]
    ids = [order.saga_id for order in orders]

    def all_stuck() -> bool:
        sagas = SagaInstance.objects.filter(pk__in=ids)
        return all(saga.stuck and saga.current_step == "create_shipment" for saga in sagas)

    wait_for(all_stuck, timeout=60, message="the sagas were not flagged stuck at create_shipment")
    return [SagaInstance.objects.get(pk=saga_id) for saga_id in ids]


def _run_in_the_worker(repair: BulkRepair, *, timeout: float = 60) -> tuple[BulkRepair, list[str]]:
    """Queue the console's task to the real worker, as beat does each second, until the repair
    ends; note what was seen whenever the canary's outcome was not known yet."""
    seen_while_waiting: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        repair.refresh_from_db()
        if repair.status not in ACTIVE:
            return repair, seen_while_waiting
        assert time.monotonic() < deadline, f"the repair did not finish: {repair.status} {repair.status_detail}"
        items = _items(repair)
        canary = next((item for item in items if item.saga_id == repair.canary_id), None)
        if canary is not None and canary.status == Status.SENT:
            others = [item for item in items if item is not canary]
            seen_while_waiting.append(",".join(item.status for item in others))
        advance_bulk_repairs.delay()
        time.sleep(0.3)


def _attempts(saga: SagaInstance) -> int:
    return SagaStep.objects.filter(saga=saga, step="create_shipment").count()


@pytest.mark.worker
def test_a_canary_that_fails_again_stops_the_repair_and_the_rest_is_not_run(live_system, operator):
    sagas = _stuck_at_the_carrier(3)
    before = {saga.pk: _attempts(saga) for saga in sagas}
    repair = bulk_repair_create(
        actor=operator, action="retry_step", reason=REASON, saga_ids=[s.pk for s in sagas], rate_per_minute=600
    )

    repair, seen = _run_in_the_worker(repair)  # the carrier is still down

    canary, *rest = _items(repair)
    assert repair.status == BulkRepair.Status.STOPPED and "the canary" in repair.status_detail
    assert "failed again" in repair.status_detail and "the other 2 saga(s) were not run" in repair.status_detail
    assert canary.status == Status.FAILED_AGAIN and "stuck at create_shipment" in canary.outcome
    assert [item.status for item in rest] == [Status.NOT_RUN, Status.NOT_RUN]
    assert seen and all(line == "waiting,waiting" for line in seen), "nothing else ran while the canary was out"
    canary_saga, *others = [SagaInstance.objects.get(pk=saga.pk) for saga in sagas]
    assert canary_saga.stuck and _attempts(canary_saga) == before[canary_saga.pk] + 1
    for saga in others:
        assert saga.stuck and _attempts(saga) == before[saga.pk], "the rest was not retried into the outage"
        assert not AuditLog.objects.filter(saga=saga, action="retry_step").exists()
    for saga in sagas:
        assert not Shipment.objects.filter(order_id=saga.aggregate_id).exists()
        assert list(LedgerEntry.objects.filter(order_id=saga.aggregate_id).values_list("kind", flat=True)) == ["charge"]


@pytest.mark.worker
def test_the_rest_waits_for_the_canary_and_follows_when_it_succeeds(live_system, operator):
    sagas = _stuck_at_the_carrier(3)
    faults_clear()  # the carrier is back
    repair = bulk_repair_create(
        actor=operator, action="retry_step", reason=REASON, saga_ids=[s.pk for s in sagas], rate_per_minute=600
    )

    repair, seen = _run_in_the_worker(repair)

    canary, *rest = _items(repair)
    assert repair.status == BulkRepair.Status.DONE, repair.status_detail
    assert all(item.status == Status.DONE for item in _items(repair))
    assert all(line == "waiting,waiting" for line in seen)
    assert all(item.sent_at >= canary.finished_at for item in rest), "the rest was sent after the canary's outcome"
    for saga in sagas:
        saga.refresh_from_db()
        assert saga.state == SagaState.COMPLETED and not saga.stuck
        assert Shipment.objects.filter(order_id=saga.aggregate_id, status=Shipment.Status.CREATED).count() == 1
        assert list(LedgerEntry.objects.filter(order_id=saga.aggregate_id).values_list("kind", flat=True)) == ["charge"]
        audit = AuditLog.objects.get(saga=saga, action="retry_step")
        assert (audit.actor_name, audit.reason) == ("olga", f"{REASON} [bulk repair {repair.pk}]")
