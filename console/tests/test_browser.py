"""The console as an operator uses it, in a real headless Chromium against the live server,
with the real worker: a saga gets stuck, the operator finds it on the dashboard, retries it
with a reason, and watches it complete; and the dashboard as deployed (gunicorn, production
settings), styled by the admin's stylesheet. Screenshots are kept in artifacts/.

Where Chromium or Playwright is missing, skipped on a developer's machine and failed in CI
(console/tests/live_console.py).
"""

import re

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model

from common.faults import faults_clear, faults_set
from conftest import ARTIFACTS
from console.models import AuditLog, BulkRepair
from console.operators import operators_group_ensure
from console.tests.live_console import BROWSER_MARKS, log_in
from devtools.processes import wait_for
from orders.services import Customer, LineInput, order_place
from sagas.models import SagaInstance, SagaState
from testing.saga_states import ADDRESS, make_catalog
from testing.storefront import parked_order, stock_catalog

pytestmark = BROWSER_MARKS


def test_operator_finds_a_stuck_saga_on_the_dashboard_retries_it_and_it_completes(
    live_system, live_server, beat, browser
):
    make_catalog()
    operator = get_user_model().objects.create_user("olga", password="olga-secret-1", is_staff=True)
    operator.groups.add(operators_group_ensure(apps))

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(15_000)
    page.goto(f"{live_server.url}/admin/login/?next=/admin/")
    page.fill("#id_username", "olga")
    page.fill("#id_password", "olga-secret-1")
    page.click("input[type=submit]")
    page.click("#saga-dashboard-link")
    assert "Nothing is stuck" in page.inner_text("#needs-operator")

    faults_set(gateway_transient=1.0)  # the payment gateway goes down
    order = order_place(
        customer=Customer(email="ann@example.com", name="Ann"),
        lines=[LineInput(sku="SKU-A", quantity=1)],
        payment_token="tok_visa",
        shipping_address=ADDRESS,
    ).order
    wait_for(
        lambda: SagaInstance.objects.get(pk=order.saga_id).stuck,
        timeout=60,
        message=f"the saga was never flagged stuck\n{live_system.tail(20)}",
    )
    faults_clear()  # the gateway is back; the saga waits for an operator
    short_id = str(order.saga_id)[:8]
    ARTIFACTS.mkdir(exist_ok=True)

    # The dashboard, left open, refreshes itself and shows the stuck saga without a reload.
    stuck_row = page.locator("#attention-table tr.stuck-row", has_text=short_id)
    stuck_row.wait_for(timeout=20_000)
    assert "charge_payment" in stuck_row.inner_text() and "GatewayUnavailable" in stuck_row.inner_text()
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

    stuck_row.get_by_role("link", name=short_id).click()
    assert page.inner_text("#saga-stuck") == "stuck"
    page.click("#action-retry_step")
    assert "same idempotency key" in page.inner_text("#action-preview")
    page.fill("#id_reason", "gateway back after the outage (INC-42)")
    page.click("#confirm-action")
    assert "Retry the current step: done" in page.inner_text("ul.messagelist")

    for _ in range(60):  # the operator reloads until the saga is through
        if page.inner_text("#saga-state") == SagaState.COMPLETED:
            break
        page.wait_for_timeout(500)
        page.reload()
    assert page.inner_text("#saga-state") == SagaState.COMPLETED, live_system.tail(20)
    assert "gateway back after the outage (INC-42)" in page.inner_text("#audit")
    page.screenshot(path=str(ARTIFACTS / "saga_page.png"), full_page=True)

    saga = SagaInstance.objects.get(pk=order.saga_id)
    assert saga.state == SagaState.COMPLETED and not saga.stuck
    audit = AuditLog.objects.get(saga=saga)
    assert (audit.actor, audit.action, audit.reason) == (
        operator,
        "retry_step",
        "gateway back after the outage (INC-42)",
    )
    order.refresh_from_db()
    assert order.status == order.Status.CONFIRMED


def test_operator_bulk_retries_stuck_sagas_with_a_canary_and_watches_each_reach_done(
    live_system, live_server, beat, browser
):
    from shipping.models import Shipment

    make_catalog()
    operator = get_user_model().objects.create_user("olga", password="olga-secret-1", is_staff=True)
    operator.groups.add(operators_group_ensure(apps))
    faults_set(carrier_transient=1.0)  # the carrier goes down
    orders = [
        order_place(
            customer=Customer(email=f"ann{n}@example.com", name="Ann"),
            lines=[LineInput(sku="SKU-A", quantity=1)],
            payment_token="tok_visa",
            shipping_address=ADDRESS,
        ).order
        for n in range(2)
    ]
    saga_ids = [order.saga_id for order in orders]
    wait_for(
        lambda: SagaInstance.objects.filter(pk__in=saga_ids, stuck=True, current_step="create_shipment").count() == 2,
        timeout=60,
        message=f"the sagas were never flagged stuck\n{live_system.tail(20)}",
    )
    faults_clear()  # the carrier is back

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(15_000)
    page.goto(f"{live_server.url}/admin/login/?next=/admin/sagas/sagainstance/%3Fattention%3Dstuck")
    page.fill("#id_username", "olga")
    page.fill("#id_password", "olga-secret-1")
    page.click("input[type=submit]")
    page.check("#action-toggle")
    page.select_option("select[name=action]", "retry_selected")
    page.click("button[name=index]")
    assert "frozen when you confirm" in page.inner_text("#bulk-how")
    page.fill("#id_reason", "carrier back (INC-9)")
    page.fill("#id_rate_per_minute", "60")
    page.click("#confirm-bulk")
    assert "2 saga(s) frozen in bulk repair" in page.inner_text("ul.messagelist")

    # The progress page, left open, fetches its fragment until every saga is done: no reload.
    page.locator("#bulk-status", has_text=re.compile(r"^done$")).wait_for(timeout=60_000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "bulk_repair.png"), full_page=True)
    assert page.locator("#bulk-items tr.bulk-done").count() == 2
    assert "canary" in page.inner_text("#bulk-items") and "2 done" in page.inner_text("#bulk-counts")

    repair = BulkRepair.objects.get()
    assert repair.status == BulkRepair.Status.DONE and repair.requester == operator
    for order in orders:
        saga = SagaInstance.objects.get(pk=order.saga_id)
        assert saga.state == SagaState.COMPLETED
        assert Shipment.objects.filter(order_id=order.pk, status=Shipment.Status.CREATED).count() == 1


# Django's admin/css/base.css: #header { background: var(--header-bg) }, --header-bg: var(--secondary),
# --secondary: #417690 (light theme). Unstyled, the header would be transparent.
ADMIN_HEADER_BACKGROUND = "rgb(65, 118, 144)"


def test_the_dashboard_served_as_deployed_has_the_admin_styles(production_web, browser, settings):
    """gunicorn with the production settings (WhiteNoise, hashed names), not the test server:
    the operator's dashboard is styled by the admin's stylesheet, which it fetched from gunicorn."""
    # The password is checked by the production settings, which know nothing of the tests' fast
    # MD5 hasher.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    make_catalog()
    operator = get_user_model().objects.create_user("petra", password="petra-secret-1", is_staff=True)
    operator.groups.add(operators_group_ensure(apps))
    base = f"http://127.0.0.1:{production_web.port}"

    # The light theme, whatever the machine prefers: the colour checked below is the light one.
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, color_scheme="light")
    page.set_default_timeout(15_000)
    stylesheets: list[tuple[str, int]] = []

    def note_stylesheet(response) -> None:
        if response.request.resource_type == "stylesheet":
            stylesheets.append((response.url, response.status))

    page.on("response", note_stylesheet)
    page.goto(f"{base}/admin/login/?next=/admin/")
    page.fill("#id_username", "petra")
    page.fill("#id_password", "petra-secret-1")
    page.click("input[type=submit]")
    page.click("#saga-dashboard-link")
    page.locator("#needs-operator").wait_for()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard_production.png"), full_page=True)

    header_background = page.eval_on_selector("#header", "header => getComputedStyle(header).backgroundColor")
    assert header_background == ADMIN_HEADER_BACKGROUND, (header_background, production_web.tail(20))
    # The dashboard's own panels sit in the admin's .module boxes, which base.css gives a margin
    # and a background; without it they fall back to the browser's defaults.
    module_background = page.eval_on_selector("#needs-operator", "box => getComputedStyle(box).backgroundColor")
    assert module_background not in ("rgba(0, 0, 0, 0)", "transparent"), module_background
    # ... fetched from gunicorn itself, under its hashed name.
    base_css = re.compile(rf"{re.escape(base)}/static/admin/css/base\.[0-9a-f]{{12}}\.css")
    assert any(base_css.fullmatch(url) and status == 200 for url, status in stylesheets), stylesheets


def test_the_api_docs_and_the_dashboard_run_under_the_content_security_policy(production_web, browser, settings):
    """Swagger UI renders the operations, and the dashboard's refresh script runs, with the
    policy enforced by Chromium and not one violation reported."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    operator = get_user_model().objects.create_user("csp-olga", password="olga-secret-1", is_staff=True)
    operator.groups.add(operators_group_ensure(apps))
    base = f"http://127.0.0.1:{production_web.port}"
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(15_000)
    violations: list[str] = []
    page.on(
        "console",
        lambda message: violations.append(message.text) if "Content Security Policy" in message.text else None,
    )

    docs = page.goto(f"{base}/api/docs/")
    assert "script-src 'self' 'nonce-" in docs.headers["content-security-policy"]
    page.locator(".opblock-summary-path", has_text="/api/v1/orders/").first.wait_for()

    page.goto(f"{base}/admin/login/?next=/admin/sagas/sagainstance/dashboard/")
    page.fill("#id_username", "csp-olga")
    page.fill("#id_password", "olga-secret-1")
    page.click("input[type=submit]")
    page.locator("#needs-operator").wait_for()
    with page.expect_response(lambda response: "fragment=1" in response.url, timeout=30_000):
        pass  # the inline refresh script, allowed by its nonce, fetched the panels
    assert violations == [], violations


@pytest.mark.django_db(transaction=True)
def test_the_saga_list_fits_a_1366_pixel_screen_and_shows_stuck_as_a_warning(live_server, browser):
    """Defect 8: at 1366 px the list's columns were cut, and its STUCK column showed a green check."""
    stock_catalog()
    operator = get_user_model().objects.create_user("lena", password="lena-secret-1", is_staff=True)
    operator.groups.add(operators_group_ensure(apps))
    # Parked: a worker left running by another test of the session must not move them on.
    sagas = [parked_order(operator).saga_id for _ in range(3)]
    SagaInstance.objects.filter(pk=sagas[0]).update(
        stuck=True, stuck_reason="charge_payment failed after 3 attempts: GatewayUnavailable: gateway answered 503"
    )
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    page.set_default_timeout(15_000)
    page.goto(f"{live_server.url}/admin/login/?next=/admin/sagas/sagainstance/")
    page.fill("#id_username", "lena")
    page.fill("#id_password", "lena-secret-1")
    page.click("input[type=submit]")
    page.locator("#result_list").wait_for()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "saga_list_1366.png"), full_page=True)
    # The admin scrolls a too-wide table inside its .results box: what does not fit is cut there.
    cut = page.eval_on_selector(".results", "box => box.scrollWidth - box.clientWidth")
    overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert cut <= 0 and overflow <= 0, (cut, overflow)
    stuck_row = page.locator("#result_list tbody tr", has_text=str(sagas[0])[:8])
    assert "⚠ stuck" in stuck_row.inner_text()
    assert stuck_row.locator("img[src*='icon-yes']").count() == 0
    # The landing page, from the admin index: the stuck saga is counted and listed.
    page.goto(f"{live_server.url}/admin/")
    page.click("#needs-attention-link")
    page.locator("#attention-counts").wait_for()
    page.screenshot(path=str(ARTIFACTS / "needs_attention.png"), full_page=True)
    assert page.inner_text("#count-stuck .ops-number") == "1"
    assert str(sagas[0])[:8] in page.inner_text("#list-stuck")


def _luminance(css_colour: str) -> float:
    red, green, blue = (int(part) / 255 for part in re.findall(r"\d+", css_colour)[:3])
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in (red, green, blue)]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def _contrast(one: str, other: str) -> float:
    lighter, darker = sorted((_luminance(one), _luminance(other)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def test_the_all_links_in_the_headings_of_needs_attention_can_be_read(live_server, browser):
    """The "all" link of a list's heading was coloured as the heading's background (#417893 on
    #417690): the way to the full list of dead letters or violations could not be seen."""
    from outbox.models import DeadLetter

    DeadLetter.objects.create(consumer="shipping", message_id="m-1", type="create_shipment", envelope={}, reason="503")
    operator = get_user_model().objects.create_user("lena", password="lena-secret-1", is_staff=True)
    operator.groups.add(operators_group_ensure(apps))
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, color_scheme="light")
    page.set_default_timeout(15_000)
    log_in(
        page,
        f"{live_server.url}/admin/login/?next=/admin/sagas/sagainstance/attention/",
        username="lena",
        password="lena-secret-1",
    )
    link = page.locator("#list-dead-letters h2 a", has_text="all")
    colour = link.evaluate("link => getComputedStyle(link).color")
    background = link.evaluate("link => getComputedStyle(link.closest('h2')).backgroundColor")
    assert _contrast(colour, background) >= 3, (colour, background)  # WCAG's minimum for large text
