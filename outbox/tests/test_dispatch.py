"""After a commit, messages leave by one loop: handled here round by round, the rest sent."""

import pytest
from django.db import connection, transaction

from common.faults import faults_set
from outbox import broker, consumer, dispatch
from outbox.consumer import register
from outbox.models import InboxMessage, OutboxMessage
from outbox.publishing import publish

pytestmark = pytest.mark.django_db(transaction=True)


def _publish(type: str, destination: str = "inventory") -> OutboxMessage:
    return publish(type=type, destination=destination, payload={}, aggregate=type, aggregate_id=1)


def test_what_local_handlers_publish_is_delivered_in_later_rounds_without_nested_commit_callbacks(monkeypatch):
    faults_set()  # no injected delivery faults: inventory messages are delivered in-process
    rounds: list[list[int]] = []
    deliver_here = dispatch._deliver_here

    def recorded(ids):
        rounds.append(list(ids))
        return deliver_here(ids)

    def handle_first(message, _prepared):
        _publish("dispatch_second")
        assert not any(isinstance(cb, dispatch.CommittedMessages) for _, cb, _ in connection.run_on_commit)

    def handle_second(message, _prepared):
        _publish("dispatch_remote", destination="default")

    for type, handle in (("dispatch_first", handle_first), ("dispatch_second", handle_second)):
        monkeypatch.setitem(consumer._registry, ("inventory", type), None)  # removed after the test
        register("inventory", type, handle=handle)
    sent: list[dict] = []
    monkeypatch.setattr(broker, "send_consume_tasks", sent.extend)
    monkeypatch.setattr(dispatch, "_deliver_here", recorded)

    with transaction.atomic():
        first = _publish("dispatch_first")

    second = OutboxMessage.objects.get(type="dispatch_second")
    remote = OutboxMessage.objects.get(type="dispatch_remote")
    assert rounds == [[first.pk], [second.pk], []], "one round per generation of local messages"
    assert InboxMessage.objects.filter(consumer="inventory").count() == 2
    assert [envelope["message_id"] for envelope in sent] == [str(remote.message_id)]
    assert not OutboxMessage.objects.filter(published_at__isnull=True).exists()


def test_messages_of_a_rolled_back_transaction_are_never_sent(monkeypatch):
    sent: list[dict] = []
    monkeypatch.setattr(broker, "send_consume_tasks", sent.extend)
    with pytest.raises(RuntimeError), transaction.atomic():
        _publish("ping", destination="default")
        raise RuntimeError("rolled back")
    assert not sent and not OutboxMessage.objects.exists()


def test_while_delivery_faults_are_injected_every_message_goes_through_the_broker(monkeypatch):
    faults_set(duplicate_delivery=1.0)
    try:
        sent: list[dict] = []
        monkeypatch.setattr(broker, "send_consume_tasks", sent.extend)
        with transaction.atomic():
            message = publish(type="reserve_stock", destination="inventory", payload={}, aggregate="a", aggregate_id=1)
        assert [envelope["message_id"] for envelope in sent] == [str(message.message_id)] * 2  # sent twice
    finally:
        faults_set()
