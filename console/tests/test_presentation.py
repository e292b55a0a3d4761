"""How the console reads (defect 8): warnings look like warnings, money like money, one time
format, addresses as addresses, and the causality tree names what caused its roots."""

import re

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from common.formatting import address_lines, money_format
from console.models import AuditLog
from console.operations import saga_position, saga_retry_step
from console.operators import operators_group_ensure
from sagas.models import SagaInstance
from testing.saga_states import ADDRESS, make_catalog, place, stuck
from testing.storefront import make_api_client, order_body, place_order, stock_catalog

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/sagas/sagainstance/"
UTC_SECONDS = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC")


@pytest.fixture
def catalog():
    return make_catalog()


@pytest.fixture
def operator() -> object:
    user = get_user_model().objects.create_user("olga", password="pw", is_staff=True)
    user.groups.add(operators_group_ensure(apps))
    return user


@pytest.fixture
def operator_client(operator) -> Client:
    client = Client()
    client.force_login(operator)
    return client


def _get(client: Client, url: str, **params) -> str:
    response = client.get(url, params)
    assert response.status_code == 200, (url, response.status_code)
    return response.content.decode()


def _saga_page(client: Client, saga: SagaInstance) -> str:
    return _get(client, reverse("admin:sagas_sagainstance_change", args=[saga.pk]))


def test_the_stuck_column_shows_a_warning_not_a_green_check(catalog, operator_client):
    flagged = stuck()
    page = _get(operator_client, CHANGELIST)
    row = page[page.index(str(flagged.pk)[:8]) :]
    row = row[: row.index("</tr>")]
    assert "⚠ stuck" in row and "icon-yes" not in row and "icon-no" not in row


def test_the_saga_list_has_seven_narrow_columns(catalog, operator_client):
    stuck()
    page = _get(operator_client, CHANGELIST)
    columns = re.findall(r'<th scope="col" class="[^"]*column-([a-z_]+)', page)
    assert columns == [
        "saga_link",
        "state_badge",
        "stuck_flag",
        "step_attempt",
        "aggregate_link",
        "created",
        "finished",
    ]


def test_ledger_entries_are_called_ledger_entries(catalog, operator_client):
    page = _get(operator_client, "/admin/")
    assert "Ledger entries" in page and "Ledger entrys" not in page


@pytest.mark.parametrize(
    ("amount", "currency", "shown"),
    [
        (499, "EUR", "€4.99"),
        (123456, "USD", "$1,234.56"),
        (500, "JPY", "¥500"),
        (1005, "CHF", "10.05 CHF"),
        (-250, "GBP", "-£2.50"),
    ],
)
def test_money_is_formatted_from_minor_units(amount, currency, shown):
    assert money_format(amount, currency) == shown


def test_money_on_the_saga_page_and_in_the_admin_shows_the_minor_units_on_hover(catalog, operator_client):
    saga = place()  # 1 × 4500
    page = _saga_page(operator_client, saga)
    assert "(minor units)</dd>" not in page and "4500 EUR (minor units)" not in page.replace(
        'title="4500 EUR (minor units)"', ""
    )
    assert '<span class="money" title="4500 EUR (minor units)">€45.00</span>' in page
    orders = _get(operator_client, reverse("admin:orders_order_changelist"))
    assert '<span class="money" title="4500 EUR (minor units)">€45.00</span>' in orders


def test_one_time_format_utc_to_the_second_everywhere(catalog, operator_client, operator):
    saga = stuck()
    saga_retry_step(saga_id=saga.pk, actor=operator, reason="INC-1", expected_position=saga_position(saga))
    audit_log = _get(operator_client, reverse("admin:console_auditlog_changelist"))
    assert UTC_SECONDS.search(audit_log) and not re.search(r"\b[ap]\.m\.", audit_log)
    page = _saga_page(operator_client, saga)
    assert UTC_SECONDS.search(page)
    assert not re.search(r"\d\d:\d\d:\d\d\.\d", page), "milliseconds on the saga page"
    listing = _get(operator_client, CHANGELIST)
    assert UTC_SECONDS.search(listing) and not re.search(r"\b[ap]\.m\.", listing)
    assert AuditLog.objects.filter(saga=saga).exists()


def test_the_shipping_address_is_shown_as_an_address(catalog, operator_client):
    saga = place()
    expected = "1 Main St<br>10115 Berlin<br>DE"
    assert address_lines(ADDRESS) == ["1 Main St", "10115 Berlin", "DE"]
    assert expected in _saga_page(operator_client, saga)
    order_page = _get(operator_client, reverse("admin:orders_order_change", args=[int(saga.aggregate_id)]))
    assert expected in order_page and "&quot;line1&quot;" not in order_page and '"line1"' not in order_page


def test_the_causality_root_says_what_caused_it(catalog, operator_client, operator):
    saga = stuck()
    page = _saga_page(operator_client, saga)
    assert "the request, the sweeper or an operator" not in page
    assert "caused by the placing of the order that started the saga" in page
    saga_retry_step(saga_id=saga.pk, actor=operator, reason="INC-2", expected_position=saga_position(saga))
    page = _saga_page(operator_client, saga)
    assert "sent by operator olga (retry_step)" in page


def test_an_order_placed_through_the_api_names_its_request_as_the_cause(operator_client):
    stock_catalog()
    response = place_order(make_api_client("shop"), order_body())
    assert response.status_code == 202, response.content
    saga = SagaInstance.objects.get(aggregate_id=str(response.json()["id"]))
    page = _saga_page(operator_client, saga)
    assert "caused by the request that started the saga (request " in page
