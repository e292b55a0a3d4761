"""The incident of issue 17 walked as a new operator would, in a real headless Chromium against
the live server, the real worker and beat: the worker stops and the console says so; orders
come in; the carrier goes down and the sagas retry, then get stuck; the operator finds one by
its customer's email, clears the dead letters that can never matter again, bulk retries the
stuck sagas with a canary once the carrier is back and watches each reach "done", and resolves
the violation the auditor opened meanwhile. A screenshot of each screen is kept in artifacts/.

Where Chromium or Playwright is missing, skipped on a developer's machine and failed in CI
(console/tests/live_console.py).
"""

import re
from collections.abc import Callable, Iterator

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.db.models import Count

from audit.models import Violation
from audit.services import audit_run
from common.faults import faults_clear, faults_set
from conftest import ARTIFACTS
from console.models import AuditLog, BulkRepair
from console.operations import DISCARD_DEAD_LETTER
from console.operators import operators_group_ensure
from console.tests.live_console import BROWSER_MARKS, log_in
from devtools.processes import wait_for
from orders.api.tokens import api_token_issue
from orders.models import Order
from outbox.models import DeadLetter
from payments.models import GatewayCharge
from sagas.models import SagaInstance, SagaState
from shipping.models import CarrierShipment
from testing.saga_states import make_catalog
from testing.storefront import ORDERS_URL, new_key, order_body

pytestmark = BROWSER_MARKS

ATTENTION = "/admin/sagas/sagainstance/attention/"
ONE_GRINDER = {"sku": "SKU-A", "quantity": 1}  # testing.saga_states.make_catalog's
CUSTOMERS = ["Ann.Lee@example.com", "bob@example.com", "cara@example.com"]
# Generous for a shared two-core machine, but bounded: every wait below is for a text.
WAIT_MS = 30_000


@pytest.fixture
def worker_back_afterwards(live_system) -> Iterator[None]:
    """The session's worker is running again when the test ends, even if it failed midway."""
    yield
    if not live_system.running:
        live_system.start()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"incident-{name}.png"), full_page=True)


def reload_until(page, condition: Callable[[], bool], *, timeout_ms: int = WAIT_MS, what: str) -> None:
    """The operator reloads until the page shows what they wait for (the needs-attention view
    refreshes itself only every half minute)."""
    deadline = page.evaluate("Date.now()") + timeout_ms
    while not condition():
        assert page.evaluate("Date.now()") < deadline, f"the page never showed {what}:\n{page.inner_text('#content')}"
        page.wait_for_timeout(250)
        page.reload()


def count_of(page, kind: str) -> int:
    return int(page.inner_text(f"#count-{kind} .ops-number"))


def test_an_operator_walks_the_incident_from_a_stopped_worker_to_every_order_confirmed(
    live_system, worker_back_afterwards, live_server, beat, browser, settings
):
    make_catalog()
    operator = get_user_model().objects.create_user("nina", password="nina-secret-1", is_staff=True)
    operator.groups.add(operators_group_ensure(apps))
    # The auditor calls an outbox message stale after a minute in production; a second here.
    settings.AUDIT_OUTBOX_MAX_AGE_SECONDS = 1
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(WAIT_MS)
    log_in(page, f"{live_server.url}/admin/login/?next={ATTENTION}", username="nina", password="nina-secret-1")

    # 1. The worker stops: the needs-attention view says so, by heartbeat, within its TTL.
    live_system.stop()
    reload_until(page, lambda: page.locator("#processes-down").count() > 0, what="the no-worker banner")
    banner = page.inner_text("#processes-down")
    assert "No live worker." in banner and "No Celery worker has renewed its heartbeat" in banner
    assert "beat" not in banner.split(".")[0]  # beat is alive: only the worker is named
    assert page.locator("#all-clear").count() == 0
    shot(page, "01-banner")

    # 2. The storefront still takes orders; their sagas wait, their first commands in the outbox.
    storefront = browser.new_context(base_url=live_server.url).request
    token = api_token_issue(user=get_user_model().objects.create_user("shop"))
    for email in CUSTOMERS:
        answer = storefront.post(
            ORDERS_URL,
            data=order_body(customer={"email": email, "name": email.split("@")[0]}, lines=[ONE_GRINDER]),
            headers={"Authorization": f"Token {token}", "Idempotency-Key": new_key()},
        )
        assert answer.status == 202 and answer.json()["status"] == "pending", answer.text()  # accepted, to follow
    orders = [Order.objects.get(customer_email=email) for email in CUSTOMERS]
    saga_ids = [order.saga_id for order in orders]
    # The operator runs the auditor by hand (audit_consistency): the relay, a task on the dead
    # worker, has sent nothing.
    wait_for(
        lambda: audit_run(full=True) and Violation.objects.filter(key="outbox:payments").exists(),
        timeout=15,
        interval=0.5,
        message="the auditor never found the payments commands stale",
    )
    stale = Violation.objects.filter(kind=Violation.Kind.OUTBOX_STALE, key="outbox:payments").get()
    page.reload()
    assert count_of(page, "violations") >= 1
    violation_row = page.locator("#list-violations tr.violation-row", has_text="outbox:payments")
    assert "unpublished" in violation_row.inner_text()
    shot(page, "02-orders-waiting")
    violation_row.get_by_role("link", name="Acknowledge").click()
    page.fill("#id_text", "the worker is down, restarting it (INC-17)")
    page.click("#violation-form input[type=submit]")
    assert "Acknowledge: done for outbox_stale outbox:payments" in page.inner_text("ul.messagelist")
    assert "acknowledged by nina: the worker is down" in page.inner_text("#list-violations")

    # 3. The carrier goes down and the worker comes back: the sagas retry, then get stuck.
    faults_set(carrier_transient=1.0, provider_latency_ms=150)  # slow enough to watch them retry
    live_system.start()
    reload_until(page, lambda: page.locator("#processes-down").count() == 0, what="the banner gone")
    reload_until(page, lambda: count_of(page, "retrying") > 0, what="a retrying saga")
    assert "create_shipment #" in page.inner_text("#list-retrying")
    shot(page, "03-retrying")
    reload_until(page, lambda: count_of(page, "stuck") == len(orders), timeout_ms=60_000, what="every saga stuck")
    stuck_list = page.inner_text("#list-stuck")
    assert stuck_list.count("create_shipment #3") == len(orders) and "CarrierUnavailable" in stuck_list
    assert count_of(page, "retrying") == 0 and count_of(page, "dead-letters") >= 3 * len(orders)
    shot(page, "04-stuck")

    # 4. A customer calls: found by a part of their email in another case, landing on the saga.
    page.fill("#console-search-q", "ANN.LEE@EXAMPLE")
    page.click("#console-search input[type=submit]")
    page.wait_for_url(re.compile(rf"/admin/sagas/sagainstance/{saga_ids[0]}/change/"))
    assert page.inner_text("#saga-stuck") == "stuck" and page.inner_text("#saga-state") == SagaState.RUNNING
    assert "Ann.Lee@example.com" in page.inner_text("#content")
    shot(page, "05-saga-found-by-email")

    # 5. The dead letters of the attempts the sagas have since retried are superseded: discarded.
    page.goto(f"{live_server.url}/admin/outbox/deadletter/?status__exact=dead&mark=superseded")
    superseded = page.locator("#result_list tbody tr")
    assert superseded.count() == 2 * len(orders)  # attempts 1 and 2 of each saga
    assert all(mark == "superseded" for mark in superseded.locator(".dead-letter-mark").all_inner_texts())
    shot(page, "06-dead-letters-superseded")
    # The mark, the list's point, is not cut off beside the filters on a 1366 px screen.
    page.set_viewport_size({"width": 1366, "height": 768})
    assert page.eval_on_selector(".results", "box => box.scrollWidth - box.clientWidth") <= 0
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.check("#action-toggle")
    page.select_option("select[name=action]", "discard")
    page.click("button[name=index]")
    assert "superseded: attempt 3 of create_shipment" in page.inner_text("#content-main")
    page.fill("#id_reason", "superseded by a later attempt; the carrier outage (INC-17)")
    page.click("#confirm-discard")
    assert f"{2 * len(orders)} dead letter(s) discarded." in page.inner_text("ul.messagelist")
    shot(page, "07-dead-letters-discarded")

    # 6. The carrier is back: bulk retry from the saga list, the canary first, then the rest.
    faults_clear()
    page.goto(f"{live_server.url}/admin/sagas/sagainstance/?attention=stuck")
    page.check("#action-toggle")
    page.select_option("select[name=action]", "retry_selected")
    page.click("button[name=index]")
    assert "frozen when you confirm" in page.inner_text("#bulk-how")
    shot(page, "08-bulk-confirm")
    page.fill("#id_reason", "carrier back after the outage (INC-17)")
    page.click("#confirm-bulk")
    assert f"{len(orders)} saga(s) frozen in bulk repair" in page.inner_text("ul.messagelist")
    # The progress page refreshes itself: the canary's outcome comes before any other is sent.
    page.locator("#bulk-items tr.bulk-done", has_text="canary").wait_for(timeout=60_000)
    page.locator("#bulk-status", has_text=re.compile(r"^done$")).wait_for(timeout=60_000)
    assert page.locator("#bulk-items tr.bulk-done").count() == len(orders)
    assert f"{len(orders)} done" in page.inner_text("#bulk-counts")
    shot(page, "09-bulk-repair-done")
    repair = BulkRepair.objects.get()
    items = sorted(repair.items.all(), key=lambda item: item.position)
    canary, rest = items[0], items[1:]
    assert canary.saga_id == repair.canary_id
    assert all(item.sent_at >= canary.finished_at for item in rest)  # the rest waited for the canary

    # The letters of the attempts the repair replaced now belong to finished sagas: discarded too.
    page.goto(f"{live_server.url}/admin/outbox/deadletter/?status__exact=dead&mark=saga+finished")
    assert page.locator("#result_list tbody tr").count() == len(orders)
    page.check("#action-toggle")
    page.select_option("select[name=action]", "discard")
    page.click("button[name=index]")
    page.fill("#id_reason", "the saga completed after the bulk repair (INC-17)")
    page.click("#confirm-discard")
    assert f"{len(orders)} dead letter(s) discarded." in page.inner_text("ul.messagelist")

    # 7. The outbox drained once the worker was back: the violation resolves, re-checked first.
    page.goto(f"{live_server.url}{ATTENTION}")
    assert count_of(page, "dead-letters") == 0 and count_of(page, "stuck") == 0
    page.locator("#list-violations tr.violation-row", has_text="outbox:payments").get_by_role(
        "link", name="Resolve"
    ).click()
    page.fill("#id_text", "worker restarted; the relay drained the outbox (INC-17)")
    shot(page, "10-resolve-violation")
    page.click("#violation-form input[type=submit]")
    assert "Resolve: done for outbox_stale outbox:payments" in page.inner_text("ul.messagelist")
    # Any other destination the stopped relay left behind (the event stream) is resolved alike.
    while page.locator("#list-violations tr.violation-row").count():
        page.locator("#list-violations tr.violation-row").first.get_by_role("link", name="Resolve").click()
        page.fill("#id_text", "worker restarted; the relay drained the outbox (INC-17)")
        page.click("#violation-form input[type=submit]")
        assert "Resolve: done for outbox_stale" in page.inner_text("ul.messagelist")
    reload_until(page, lambda: page.locator("#all-clear").count() > 0, what="all clear")
    shot(page, "11-all-clear")

    # What the operator saw is what the books say.
    for order in orders:
        order.refresh_from_db()
        assert order.status == Order.Status.CONFIRMED, order.status
        assert SagaInstance.objects.get(pk=order.saga_id).state == SagaState.COMPLETED
    carrier = CarrierShipment.objects.filter(accepted=True, cancelled=False)
    charges = GatewayCharge.objects.filter(kind=GatewayCharge.Kind.CHARGE, succeeded=True)
    for saga_id in saga_ids:
        assert carrier.filter(idempotency_key__contains=str(saga_id)).count() == 1
        assert charges.filter(idempotency_key__contains=str(saga_id)).count() == 1
    assert sorted(charges.values_list("amount", flat=True)) == sorted(order.total_amount for order in orders)
    discarded = DeadLetter.objects.filter(status=DeadLetter.Status.DISCARDED)
    assert DeadLetter.objects.filter(status=DeadLetter.Status.DEAD).count() == 0
    assert discarded.count() == 3 * len(orders) and set(discarded.values_list("discarded_by", flat=True)) == {"nina"}
    assert discarded.filter(
        discard_reason="superseded by a later attempt; the carrier outage (INC-17)"
    ).count() == 2 * len(orders)
    audited = AuditLog.objects.filter(action=DISCARD_DEAD_LETTER, actor=operator, outcome__startswith="discarded")
    assert audited.count() == 3 * len(orders)
    assert set(audited.values("saga_id").annotate(n=Count("id")).values_list("saga_id", "n")) == {
        (saga_id, 3) for saga_id in saga_ids
    }
    stale.refresh_from_db()
    assert not stale.is_open and stale.resolved_by == "nina" and stale.acknowledged_by == "nina"
    assert stale.resolution_reason == "worker restarted; the relay drained the outbox (INC-17)"
    assert AuditLog.objects.filter(action="resolve_violation", target=f"violation:{stale.pk}", actor=operator).exists()
