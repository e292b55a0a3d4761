"""The causality tree of a saga's messages: each message under the message that caused it,
from the stored correlation and causation ids, and its section on the saga page."""

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from console.operators import operators_group_ensure
from console.selectors import message_tree, message_tree_rows
from outbox.models import OutboxMessage
from outbox.stream import STREAM_DESTINATION
from sagas.models import SagaState
from testing.pump import pump
from testing.saga_states import make_catalog, place

pytestmark = pytest.mark.django_db

CHAIN = [
    "charge_payment",
    "saga_reply",
    "reserve_stock",
    "saga_reply",
    "create_shipment",
    "saga_reply",
    "confirm_order",
    "saga_reply",
]


def test_each_message_is_nested_under_the_message_that_caused_it():
    make_catalog()
    saga = place()
    pump()
    saga.refresh_from_db()
    assert saga.state == SagaState.COMPLETED
    roots = message_tree(correlation_id=str(saga.pk))
    # The API's transaction caused the first command and the order.placed event.
    assert [root.message.type for root in roots] == ["order.placed", "charge_payment"]
    assert all(root.message.causation_id == "" for root in roots)
    rows = commands(message_tree_rows(correlation_id=str(saga.pk)))
    assert [(row.depth, row.message.type) for row in rows] == list(enumerate(CHAIN))
    for parent, child in zip(rows, rows[1:], strict=False):
        assert commands(parent.children) == [child]
        assert child.message.causation_id == str(parent.message.message_id)
    # Each event is under the command whose handler announced it.
    events = {row.message.type: row for row in message_tree_rows(correlation_id=str(saga.pk)) if is_event(row)}
    by_id = {str(row.message.message_id): row.message.type for row in rows}
    assert {kind: by_id.get(row.message.causation_id) for kind, row in events.items()} == {
        "order.placed": None,
        "payment.captured": "charge_payment",
        "stock.reserved": "reserve_stock",
        "shipment.created": "create_shipment",
        "order.confirmed": "confirm_order",
    }


def is_event(row) -> bool:
    return row.message.destination == STREAM_DESTINATION


def commands(rows) -> list:
    return [row for row in rows if not is_event(row)]


def test_a_message_whose_cause_was_purged_becomes_a_root():
    make_catalog()
    saga = place()
    pump()
    OutboxMessage.objects.filter(correlation_id=str(saga.pk), type="charge_payment").delete()
    rows = commands(message_tree_rows(correlation_id=str(saga.pk)))
    assert [(row.depth, row.message.type) for row in rows] == list(enumerate(CHAIN[1:]))


def test_the_saga_page_shows_the_causality_tree():
    make_catalog()
    saga = place()
    pump()
    user = get_user_model().objects.create_user("olga", password="pw", is_staff=True)
    user.groups.add(operators_group_ensure(apps))
    client = Client()
    client.force_login(user)
    page = client.get(reverse("admin:sagas_sagainstance_change", args=[saga.pk])).content.decode()
    assert 'id="causality"' in page
    section = page.split('id="causality"', 1)[1].split("</table>", 1)[0]
    assert section.count('class="causality-row"') == len(CHAIN) + 5  # and the order's five events
    for depth in range(len(CHAIN)):
        assert f'data-depth="{depth}"' in section
    for message in OutboxMessage.objects.filter(correlation_id=str(saga.pk)):
        assert str(message.message_id) in section
