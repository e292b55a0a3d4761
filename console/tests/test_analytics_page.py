"""The console's analytics page: the active generation's figures, for operators only."""

from datetime import timedelta

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from analytics.models import CancellationDaily, DailySales, Fulfilment, Generation
from console.operators import operators_group_ensure

pytestmark = pytest.mark.django_db


def _figures() -> None:
    today = timezone.now().date()
    retired = Generation.objects.create(status=Generation.Status.RETIRED, stream="s")
    DailySales.objects.create(generation=retired, day=today, currency="EUR", orders_placed=999)
    active = Generation.objects.create(
        status=Generation.Status.ACTIVE, stream="s", next_offset=40, tail_offset=49, last_event_at=timezone.now()
    )
    for offset, placed in ((0, 7), (1, 5)):
        DailySales.objects.create(
            generation=active,
            day=today - timedelta(days=offset),
            currency="EUR",
            orders_placed=placed,
            orders_confirmed=placed - 1,
            orders_cancelled=1,
            captured_amount=placed * 4500,
            refunded_amount=4500,
            refunds=1,
        )
    CancellationDaily.objects.create(generation=active, day=today, reason="out of stock", orders=2)
    Fulfilment.objects.create(generation=active, order_id=1, day=today, seconds=2.0)
    Fulfilment.objects.create(generation=active, order_id=2, day=today, seconds=4.0)


def test_an_operator_sees_the_active_generations_figures_and_the_lag():
    _figures()
    user = get_user_model().objects.create_user("olga", password="pw", is_staff=True)
    user.groups.add(operators_group_ensure(apps))
    client = Client()
    client.force_login(user)
    page = client.get("/admin/analytics/?days=30").content.decode()
    totals = page.split('id="totals-panel"', 1)[1].split("</table>", 1)[0]
    assert '<td class="ops-number">12</td>' in totals  # 7 + 5 placed, not the retired 999
    assert "10 / 2" in totals  # confirmed / cancelled
    assert 'title="45000 minor units">450<' in totals  # net: 12 x 45.00 captured - 2 x 45.00 refunded
    assert "17 %" in totals  # 2 of 12 finished were compensated
    assert "out of stock" in page.split('id="reasons-panel"', 1)[1]
    lag = page.split('id="stream-lag-panel"', 1)[1].split("</table>", 1)[0]
    assert '<span class="ops-number ops-bad">10</span> events' in lag
    assert page.count('class="bar"') >= 2 + 1  # two days of orders, one reason's bar
    assert "no order confirmed in this period" not in page


def test_the_page_is_for_operators_only():
    client = Client()
    assert client.get("/admin/analytics/").status_code == 302  # to the login page
    get_user_model().objects.create_user("sam", password="pw", is_staff=True)
    client.login(username="sam", password="pw")
    assert client.get("/admin/analytics/").status_code == 403
