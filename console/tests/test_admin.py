"""The operators' console through HTTP: the dashboard, the saga page, the action forms with
their permission checks, bulk actions on the saga list, and the read-only admins."""

import io
import re
from html import escape

import pytest
from django.apps import apps
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from audit.models import Violation
from console.bulk_repairs import ACTIVE, bulk_repair_advance
from console.models import AuditLog, BulkRepair
from console.operations import saga_position
from console.operators import operators_group_ensure
from outbox.models import DeadLetter, OutboxMessage
from sagas.keys import step_key
from sagas.models import SagaInstance, SagaState, SagaStep
from sagas.orchestrator import saga_sweep
from testing.messages import sent_envelope
from testing.saga_states import completed, failed, make_catalog, running, settle, stuck, stuck_past_pivot

pytestmark = pytest.mark.django_db

REASON = "gateway outage resolved (INC-42)"
EVIDENCE = "refund re_123 made in the provider's console"
CHANGELIST = "/admin/sagas/sagainstance/"
DASHBOARD = "/admin/sagas/sagainstance/dashboard/"


def _saga_url(saga: SagaInstance) -> str:
    return reverse("admin:sagas_sagainstance_change", args=[saga.pk])


def _action_url(saga: SagaInstance, action: str) -> str:
    return reverse("admin:sagas_sagainstance_action", args=[saga.pk, action])


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
    """Staff who may look at sagas but not repair them."""
    user = get_user_model().objects.create_user("vic", password="pw", is_staff=True)
    user.user_permissions.add(
        Permission.objects.get(codename="view_sagainstance"), Permission.objects.get(codename="view_deadletter")
    )
    client = Client()
    client.force_login(user)
    return client


def _position(saga: SagaInstance) -> str:
    saga.refresh_from_db()
    return saga_position(saga)


# ---------------------------------------------------------------------------
# Dashboard.
# ---------------------------------------------------------------------------


def test_dashboard_is_linked_from_the_admin_index_and_shows_stuck_and_failed_sagas_first(catalog, operator_client):
    stuck_saga, failed_saga = stuck(), failed()
    completed()
    index = operator_client.get("/admin/")
    assert DASHBOARD in index.content.decode()

    page = operator_client.get(DASHBOARD).content.decode()
    attention = page[page.index('id="needs-operator"') : page.index('id="states-panel"')]
    assert "1 stuck, 1 failed" in attention
    assert str(stuck_saga.pk)[:8] in attention and stuck_saga.stuck_reason in attention
    assert str(failed_saga.pk)[:8] in attention and "compensation charge_payment failed" in attention
    assert attention.index("stuck-row") < attention.index("failed-row")
    # Charts are drawn on the server; nothing is loaded from outside (the admin works offline).
    assert 'class="ops-chart"' in page and not re.search(r'(src|href)="(https?:)?//', page)
    assert "?fragment=1" in page  # it refreshes itself

    fragment = operator_client.get(DASHBOARD + "?fragment=1").content.decode()
    assert "<html" not in fragment and str(stuck_saga.pk)[:8] in fragment


def test_dashboard_counts_states_backlog_dead_letters_and_throughput(catalog, operator_client):
    done = completed()
    SagaInstance.objects.filter(pk=done.pk).update(created_at=done.finished_at - timezone.timedelta(seconds=2))
    running()  # its command is still unpublished: the backlog
    DeadLetter.objects.create(consumer="payments", message_id="x", envelope={}, reason="boom")
    response = operator_client.get(DASHBOARD)
    summary = response.context["d"]
    counts = {row.state: (row.last_hour, row.last_day) for row in summary.state_counts}
    assert counts[SagaState.COMPLETED] == (1, 1) and counts[SagaState.RUNNING] == (1, 1)
    assert summary.backlog.count == OutboxMessage.objects.filter(published_at__isnull=True).count() > 0
    assert summary.dead_letter_count == 1
    assert summary.throughput.completed == 1 and 1.5 < summary.throughput.p50_seconds < 3
    assert summary.violations == []


def test_a_saga_past_its_step_deadline_shows_as_stuck_after_one_sweep(catalog, operator_client):
    saga = running()
    SagaInstance.objects.filter(pk=saga.pk).update(step_deadline=timezone.now() - timezone.timedelta(seconds=1))
    before = operator_client.get(DASHBOARD).context["d"]
    assert before.stuck_count == 0 and before.overdue_count == 1  # announced: flagged at the next sweep

    saga_sweep()  # what beat runs every few seconds

    after = operator_client.get(DASHBOARD)
    assert after.context["d"].stuck_count == 1 and after.context["d"].overdue_count == 0
    assert "no reply before the step&#x27;s deadline" in after.content.decode()


def test_dashboard_needs_the_view_permission(catalog):
    user = get_user_model().objects.create_user("sam", password="pw", is_staff=True)
    client = Client()
    client.force_login(user)
    assert client.get(DASHBOARD).status_code == 403


# ---------------------------------------------------------------------------
# Saga page and action forms.
# ---------------------------------------------------------------------------


def test_saga_page_shows_the_order_timeline_messages_lineage_and_the_actions_of_its_state(catalog, operator_client):
    saga = stuck()
    page = operator_client.get(_saga_url(saga)).content.decode()
    for section in ("order-panel", "money-panel", "stock-panel", "shipment-panel", "timeline", "messages", "lineage"):
        assert f'id="{section}"' in page
    assert step_key(saga.pk, "charge_payment") in page  # the step key in the lineage
    command = OutboxMessage.objects.filter(correlation_id=str(saga.pk)).first()
    assert str(command.message_id) in page
    assert 'id="action-retry_step"' in page and 'id="action-compensate"' in page
    assert 'id="action-mark_step_done"' in page and 'id="action-retry_compensation"' not in page


def test_staff_without_the_permissions_see_the_page_but_no_buttons(catalog, viewer_client):
    saga = stuck()
    response = viewer_client.get(_saga_url(saga))
    assert response.status_code == 200
    page = response.content.decode()
    assert 'id="timeline"' in page and 'id="action-' not in page
    assert viewer_client.get(_action_url(saga, "retry_step")).status_code == 403


@pytest.mark.parametrize("action", ["retry_step", "compensate", "retry_compensation", "mark_step_done"])
def test_a_forged_post_without_the_permission_is_refused_with_403_and_audited(catalog, viewer_client, action):
    saga = stuck()
    data = {"reason": REASON, "evidence": EVIDENCE, "position": _position(saga)}
    response = viewer_client.post(_action_url(saga, action), data)
    assert response.status_code == 403
    saga.refresh_from_db()
    assert saga.stuck and saga.attempt == 3
    audit = AuditLog.objects.get(saga=saga)
    assert audit.actor_name == "vic" and audit.outcome.startswith("refused: permission denied")


def test_each_permission_allows_only_its_own_action(catalog):
    saga = stuck()
    user = get_user_model().objects.create_user("rita", password="pw", is_staff=True)
    user.user_permissions.add(
        Permission.objects.get(codename="view_sagainstance"), Permission.objects.get(codename="retry_saga")
    )
    client = Client()
    client.force_login(user)
    page = client.get(_saga_url(saga)).content.decode()
    assert 'id="action-retry_step"' in page and 'id="action-compensate"' not in page
    assert client.post(_action_url(saga, "compensate"), {"reason": REASON}).status_code == 403
    assert client.post(_action_url(saga, "retry_step"), {"reason": REASON}).status_code == 302


def test_operator_retries_a_stuck_saga_through_the_confirmation_form(catalog, operator_client):
    saga = stuck()
    form = operator_client.get(_action_url(saga, "retry_step")).content.decode()
    assert 'name="reason"' in form and "same idempotency key" in form

    response = operator_client.post(
        _action_url(saga, "retry_step"), {"reason": REASON, "position": _position(saga)}, follow=True
    )
    assert response.redirect_chain[-1][0] == _saga_url(saga)
    assert "Retry the current step: done" in response.content.decode()
    saga.refresh_from_db()
    assert not saga.stuck and saga.attempt == 4
    audit = AuditLog.objects.get(saga=saga)
    assert (audit.action, audit.actor_name, audit.reason) == ("retry_step", "olga", REASON)
    assert REASON in response.content.decode()  # the audit log is shown on the saga page


def test_the_reason_is_required_by_the_form(catalog, operator_client):
    saga = stuck()
    response = operator_client.post(_action_url(saga, "retry_step"), {"reason": "", "position": _position(saga)})
    assert response.status_code == 200 and "This field is required" in response.content.decode()
    response = operator_client.post(
        _action_url(saga, "mark_step_done"), {"reason": REASON, "evidence": "", "position": _position(saga)}
    )
    assert response.status_code == 200 and "This field is required" in response.content.decode()
    saga.refresh_from_db()
    assert saga.attempt == 3 and not AuditLog.objects.exists()


def test_an_action_refused_in_the_saga_state_says_why(catalog, operator_client):
    saga = completed()
    form = operator_client.get(_action_url(saga, "retry_step")).content.decode()
    assert 'id="action-refusal"' in form and 'id="confirm-action"' not in form
    response = operator_client.post(_action_url(saga, "retry_step"), {"reason": REASON}, follow=True)
    page = response.content.decode()
    assert "refused" in page and "only a running or compensating saga has a step to retry" in page
    assert AuditLog.objects.get(saga=saga).outcome.startswith("refused: the saga is completed")


def test_an_action_on_a_saga_that_moved_on_is_refused(catalog, operator_client):
    saga = stuck()
    stale = _position(saga)
    operator_client.post(
        _action_url(saga, "mark_step_done"), {"reason": REASON, "evidence": EVIDENCE, "position": stale}
    )
    response = operator_client.post(
        _action_url(saga, "mark_step_done"), {"reason": REASON, "evidence": EVIDENCE, "position": stale}, follow=True
    )
    assert "moved on since the page was loaded" in response.content.decode()
    saga.refresh_from_db()
    assert (saga.current_step, saga.attempt) == ("charge_payment", 4)  # one record by hand, not two


def test_mark_done_and_retry_compensation_through_the_forms(catalog, operator_client):
    saga = failed()
    page = operator_client.get(_saga_url(saga)).content.decode()
    assert 'id="action-retry_compensation"' in page and 'id="action-retry_step"' not in page
    operator_client.post(
        _action_url(saga, "mark_step_done"), {"reason": REASON, "evidence": EVIDENCE, "position": _position(saga)}
    )
    settle()  # the participant records the refund by hand
    saga.refresh_from_db()
    assert (saga.state, saga.compensated_steps) == (SagaState.COMPENSATED, ["charge_payment", "create_order"])
    assert escape(EVIDENCE) in operator_client.get(_saga_url(saga)).content.decode()


def test_sagas_cannot_be_edited_added_or_deleted(catalog, operator_client):
    saga = stuck()
    assert operator_client.post(_saga_url(saga), {"state": "completed"}).status_code == 405
    assert operator_client.get(f"{CHANGELIST}add/").status_code == 403
    assert operator_client.post(reverse("admin:sagas_sagainstance_delete", args=[saga.pk])).status_code == 403
    saga.refresh_from_db()
    assert saga.state == SagaState.RUNNING


# ---------------------------------------------------------------------------
# The saga list: filters, search, bulk actions.
# ---------------------------------------------------------------------------


def test_saga_list_filters_and_searches_by_saga_and_order_id(catalog, operator_client):
    stuck_saga = stuck()
    other = completed()
    page = operator_client.get(CHANGELIST + "?stuck__exact=1&step=charge_payment").content.decode()
    assert str(stuck_saga.pk)[:8] in page and str(other.pk)[:8] not in page
    # A search that finds one saga lands on its page.
    assert operator_client.get(CHANGELIST, {"q": str(other.pk)})["Location"] == _saga_url(other)
    assert operator_client.get(CHANGELIST, {"q": stuck_saga.aggregate_id})["Location"] == _saga_url(stuck_saga)
    assert operator_client.get(CHANGELIST, {"q": "not-an-id"}).status_code == 200


def _run_bulk_repair() -> BulkRepair:
    """Advance the bulk repair the admin recorded, as beat would, its messages handled here."""
    repair = BulkRepair.objects.get()
    for _ in range(200):
        repair = bulk_repair_advance(repair_id=repair.pk)
        if repair.status not in ACTIVE:
            return repair
        settle()
    raise AssertionError(f"the bulk repair did not finish: {repair.status_detail}")


def test_bulk_retry_asks_for_a_reason_then_retries_each_saga_it_can(catalog, operator_client):
    sagas = [stuck() for _ in range(3)]
    done = completed()
    url = CHANGELIST
    selected = [str(saga.pk) for saga in sagas] + [str(done.pk)]  # one that cannot be retried
    confirm = operator_client.post(url, {"action": "retry_selected", ACTION_CHECKBOX_NAME: selected, "index": 0})
    assert confirm.status_code == 200 and 'id="bulk-form"' in confirm.content.decode()
    assert all(saga.stuck for saga in SagaInstance.objects.filter(pk__in=[s.pk for s in sagas]))

    hidden = dict(re.findall(r'name="(action|select_across|index|apply)" value="([^"]*)"', confirm.content.decode()))
    response = operator_client.post(
        url,
        {**hidden, ACTION_CHECKBOX_NAME: selected, "reason": "provider back (INC-7)", "rate_per_minute": "600"},
        follow=True,
    )
    assert "4 saga(s) frozen in bulk repair" in response.content.decode()
    repair = _run_bulk_repair()
    assert "finished: 3 done, 1 refused" in repair.status_detail
    for saga in sagas:
        saga.refresh_from_db()
        assert not saga.stuck and saga.state == SagaState.COMPLETED
    reason = f"provider back (INC-7) [bulk repair {repair.pk}]"
    assert AuditLog.objects.filter(action="retry_step", reason=reason).count() == 4


def test_bulk_retry_of_all_stuck_sagas_of_one_step(catalog, operator_client):
    at_charge = [stuck() for _ in range(2)]
    elsewhere = stuck_past_pivot()
    url = CHANGELIST + "?stuck__exact=1&step=charge_payment"
    data = {"action": "retry_selected", "select_across": "1", "index": 0, ACTION_CHECKBOX_NAME: [at_charge[0].pk]}
    confirm = operator_client.post(url, data).content.decode()
    assert "for <strong>2</strong> saga(s)" in confirm
    operator_client.post(url, {**data, "apply": "1", "reason": REASON, "rate_per_minute": "600"})
    _run_bulk_repair()
    for saga in at_charge:
        saga.refresh_from_db()
        assert not saga.stuck and saga.state == SagaState.COMPLETED
    elsewhere.refresh_from_db()
    assert elsewhere.stuck


def test_bulk_compensate_across_every_filtered_saga(catalog, operator_client):
    sagas = [stuck() for _ in range(2)]
    url = CHANGELIST + "?stuck__exact=1"
    data = {"action": "compensate_selected", "select_across": "1", "index": 0, ACTION_CHECKBOX_NAME: [sagas[0].pk]}
    assert 'id="bulk-form"' in operator_client.post(url, data).content.decode()
    operator_client.post(url, {**data, "apply": "1", "reason": REASON, "rate_per_minute": "600"})
    repair = _run_bulk_repair()
    assert repair.status == BulkRepair.Status.DONE
    assert set(SagaInstance.objects.values_list("state", flat=True)) == {SagaState.COMPENSATED}


def test_bulk_actions_need_their_permission(catalog, viewer_client):
    saga = stuck()
    page = viewer_client.get(CHANGELIST).content.decode()
    assert "retry_selected" not in page
    viewer_client.post(
        CHANGELIST,
        {"action": "retry_selected", ACTION_CHECKBOX_NAME: [saga.pk], "index": 0, "apply": "1", "reason": "x"},
    )
    saga.refresh_from_db()
    assert saga.stuck and saga.attempt == 3 and not AuditLog.objects.filter(outcome__startswith="sent").exists()


# ---------------------------------------------------------------------------
# Dead letters, audit log, other admins.
# ---------------------------------------------------------------------------


def _dead_letter(saga: SagaInstance) -> DeadLetter:
    """The dead letter of the saga's current attempt: the one whose replay resumes the saga."""
    saga.refresh_from_db()
    attempt = SagaStep.objects.get(saga=saga, step=saga.current_step, phase=saga.phase, attempt=saga.attempt)
    command = OutboxMessage.objects.get(message_id=attempt.command_message_id)
    return DeadLetter.objects.create(
        consumer="payments",
        message_id=str(command.message_id),
        type=command.type,
        correlation_id=str(saga.pk),
        envelope=sent_envelope(command),
        reason="GatewayUnavailable: gateway answered 503",
    )


def test_replaying_a_dead_letter_from_the_saga_page(catalog, operator_client, viewer_client):
    saga = stuck()
    dead = _dead_letter(saga)
    page = operator_client.get(_saga_url(saga)).content.decode()
    replay_url = reverse("admin:sagas_deadletter_replay", args=[dead.pk])
    assert replay_url in page and replay_url not in viewer_client.get(_saga_url(saga)).content.decode()
    assert viewer_client.post(replay_url, {"reason": REASON}).status_code == 403
    dead.refresh_from_db()
    assert dead.status == DeadLetter.Status.DEAD

    response = operator_client.post(replay_url, {"reason": REASON, "next": _saga_url(saga)}, follow=True)
    assert response.redirect_chain[-1][0] == _saga_url(saga)
    dead.refresh_from_db()
    assert dead.status == DeadLetter.Status.REPLAYED
    outcomes = list(AuditLog.objects.filter(target=f"deadletter:{dead.pk}").values_list("actor_name", "outcome"))
    assert outcomes[0][0] == "olga" and outcomes[0][1].startswith("replayed")
    assert outcomes[1][0] == "vic" and outcomes[1][1].startswith("refused: permission denied")


def test_replaying_dead_letters_from_their_admin_asks_for_a_reason_and_audits_each(
    catalog, operator_client, viewer_client
):
    url = reverse("admin:outbox_deadletter_changelist")
    dead = _dead_letter(stuck())
    selected = [str(dead.pk)]
    viewer = viewer_client.post(url, {"action": "replay", ACTION_CHECKBOX_NAME: selected, "index": 0})
    assert viewer.status_code == 403  # no permission: a forged POST is refused, and audited on the saga
    forged = AuditLog.objects.get(target=f"deadletter:{dead.pk}", actor_name="vic")
    assert str(forged.saga_id) == dead.correlation_id
    assert forged.outcome == "refused: permission denied (needs outbox.replay_deadletter)"

    confirm = operator_client.post(url, {"action": "replay", ACTION_CHECKBOX_NAME: selected, "index": 0})
    page = confirm.content.decode()
    assert confirm.status_code == 200 and 'id="replay-form"' in page and "GatewayUnavailable" in page
    hidden = dict(re.findall(r'name="(action|select_across|index|apply)" value="([^"]*)"', page))
    blank = operator_client.post(url, {**hidden, ACTION_CHECKBOX_NAME: selected, "reason": "  "})
    assert "This field is required." in blank.content.decode()
    dead.refresh_from_db()
    assert dead.status == DeadLetter.Status.DEAD
    assert not AuditLog.objects.filter(target=f"deadletter:{dead.pk}", actor_name="olga")

    response = operator_client.post(url, {**hidden, ACTION_CHECKBOX_NAME: selected, "reason": REASON}, follow=True)
    assert "1 dead letter(s) replayed." in response.content.decode()
    dead.refresh_from_db()
    assert dead.status == DeadLetter.Status.REPLAYED
    audit = AuditLog.objects.get(target=f"deadletter:{dead.pk}", actor_name="olga")
    assert audit.actor_name == "olga" and audit.reason == REASON and audit.outcome.startswith("replayed")


def test_audit_log_admin_is_read_only(catalog, operator_client):
    saga = stuck()
    operator_client.post(_action_url(saga, "retry_step"), {"reason": REASON})
    audit = AuditLog.objects.get(saga=saga)
    assert operator_client.get("/admin/console/auditlog/").status_code == 200
    assert operator_client.get("/admin/console/auditlog/add/").status_code == 403
    change = operator_client.post(f"/admin/console/auditlog/{audit.pk}/change/", {"reason": "rewritten"})
    assert change.status_code == 403
    assert operator_client.post(f"/admin/console/auditlog/{audit.pk}/delete/", {"post": "yes"}).status_code == 403
    audit.refresh_from_db()
    assert audit.reason == REASON


@pytest.mark.parametrize(
    "url",
    [
        "/admin/orders/order/",
        "/admin/payments/payment/",
        "/admin/payments/ledgerentry/",
        "/admin/payments/gatewaycharge/",
        "/admin/inventory/product/",
        "/admin/inventory/stocklevel/",
        "/admin/inventory/reservation/",
        "/admin/inventory/stockmovement/",
        "/admin/shipping/shipment/",
        "/admin/shipping/carriershipment/",
    ],
)
def test_operators_can_read_each_context_and_ledgers_cannot_be_edited(catalog, operator_client, url):
    completed()
    assert operator_client.get(url).status_code == 200
    assert operator_client.get(url + "add/").status_code == 403


def test_bench_dashboard_fills_sagas_in_every_state_and_prints_its_figures_last(monkeypatch, settings):
    """A smoke test of the benchmark's fill and timing, in the test database (the real run
    re-runs itself against a database of its own, outside the test suite)."""
    monkeypatch.setenv("BACKOFFICE_BENCH_CHILD", "1")
    out = io.StringIO()
    call_command("bench_dashboard", sagas=1000, dead_letters=100, violations=10, loads=1, stdout=out)
    assert set(SagaInstance.objects.values_list("state", flat=True)) == set(SagaState)
    assert SagaInstance.objects.filter(stuck=True).exists()
    assert DeadLetter.objects.count() == 100 and Violation.objects.filter(resolved_at=None).count() == 10
    lines = out.getvalue().splitlines()
    assert re.fullmatch(r"dashboard_ms=[0-9.]+ saga_list_ms=[0-9.]+", lines[-3])
    assert re.fullmatch(
        r"needs_attention_ms=[0-9.]+ search_ms=[0-9.]+ needs_attention_p95_ms=[0-9.]+ search_p95_ms=[0-9.]+", lines[-1]
    )


def test_staff_without_the_view_permission_write_nothing_to_the_audit_log(catalog):
    saga = stuck()
    dead = _dead_letter(saga)
    nobody = get_user_model().objects.create_user("nina", password="pw", is_staff=True)
    client = Client()
    client.force_login(nobody)
    huge = "x" * 1_000_000
    replay_url = reverse("admin:sagas_deadletter_replay", args=[dead.pk])
    assert client.post(replay_url, {"reason": huge}).status_code == 403
    assert client.post(_action_url(saga, "retry_step"), {"reason": huge}).status_code == 403
    assert not AuditLog.objects.exists()


def test_a_refused_attempt_keeps_a_bounded_reason_and_refusals_are_rate_limited(catalog, viewer_client):
    from console.audit import OPERATOR_TEXT_MAX, REFUSALS_PER_MINUTE

    saga = stuck()
    dead = _dead_letter(saga)
    replay_url = reverse("admin:sagas_deadletter_replay", args=[dead.pk])
    for _ in range(REFUSALS_PER_MINUTE + 20):
        assert viewer_client.post(replay_url, {"reason": "x" * 100_000}).status_code == 403
    rows = AuditLog.objects.filter(actor_name="vic")
    assert 1 <= rows.count() <= REFUSALS_PER_MINUTE
    assert max(len(reason) for reason in rows.values_list("reason", flat=True)) == OPERATOR_TEXT_MAX


def test_the_forms_say_how_long_a_reason_may_be(catalog, operator_client):
    saga = stuck()
    response = operator_client.post(
        _action_url(saga, "retry_step"), {"reason": "x" * 2001, "position": _position(saga)}
    )
    assert response.status_code == 200
    assert "Ensure this value has at most 2000 characters" in response.content.decode()
    saga.refresh_from_db()
    assert saga.stuck and not AuditLog.objects.exists()
