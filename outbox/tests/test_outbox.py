"""The outbox's own rules: publish only in a transaction, retention, replay, logs that carry
the message's ids. Unit tests of single handlers run in the test process."""

import io
import json
import logging
import uuid
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from common.logging import ContextFilter, JsonFormatter
from outbox.consumer import deliver, register
from outbox.exceptions import OutsideTransaction
from outbox.models import DeadLetter, InboxMessage, OutboxMessage
from outbox.publishing import publish
from outbox.selectors import outbox_backlog
from outbox.services import ReplayRefused, dead_letter_replay, retention_purge
from testing.messages import sent_envelope

pytestmark = pytest.mark.django_db


def _publish(**overrides) -> OutboxMessage:
    fields = dict(type="ping", destination="default", payload={}, aggregate="test", aggregate_id=1)
    with transaction.atomic():
        return publish(**{**fields, **overrides})


def test_publish_refuses_to_run_outside_a_transaction(django_db_blocker):
    from django.db import connection

    assert connection.in_atomic_block  # the test's own transaction; leave it to prove the rule
    with pytest.raises(OutsideTransaction):
        connection.in_atomic_block = False
        try:
            publish(type="ping", destination="default", payload={}, aggregate="t", aggregate_id=1)
        finally:
            connection.in_atomic_block = True


def test_rolled_back_publish_leaves_no_message():
    with pytest.raises(RuntimeError), transaction.atomic():
        _publish()
        raise RuntimeError("rollback")
    assert not OutboxMessage.objects.exists()


def test_a_handled_message_inherits_correlation_and_names_its_cause():
    seen = {}

    def handle(message, _):
        seen["child"] = publish(type="ping", destination="default", payload={}, aggregate="t", aggregate_id=2)

    register("default", "test_parent", handle=handle)
    parent = _publish(type="test_parent", correlation_id="corr-1")
    deliver(sent_envelope(parent))
    child = seen["child"]
    assert child.correlation_id == "corr-1"
    assert child.causation_id == str(parent.message_id)


def test_every_log_line_while_handling_carries_message_correlation_and_causation_ids():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("outbox.tests.causality")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    register("default", "test_logging", handle=lambda message, _: logger.info("inside the handler"))
    try:
        message = _publish(type="test_logging", correlation_id="corr-9", causation_id="cause-9")
        deliver(sent_envelope(message))
    finally:
        logger.removeHandler(handler)
    line = json.loads(stream.getvalue().splitlines()[0])
    assert line["event"] == "inside the handler"
    assert line["message_id"] == str(message.message_id)
    assert line["correlation_id"] == "corr-9"
    assert line["causation_id"] == "cause-9"


def test_duplicate_delivery_is_absorbed_by_the_inbox():
    calls = []
    register("default", "test_count", handle=lambda message, _: calls.append(message.message_id))
    message = _publish(type="test_count")
    assert deliver(sent_envelope(message)) == "handled"
    assert deliver(sent_envelope(message)) == "duplicate"
    assert len(calls) == 1


def test_unknown_message_type_is_a_poison_dead_letter():
    message = _publish(type="no_such_type")
    assert deliver(sent_envelope(message)) == "dead_letter"
    dead = DeadLetter.objects.get()
    assert dead.poison and "no handler" in dead.reason


def test_retention_purges_old_published_messages_and_inbox_rows_only():
    old = timezone.now() - timedelta(days=30)
    kept_unpublished = _publish()
    purged = _publish()
    recent = _publish()
    OutboxMessage.objects.filter(pk=purged.pk).update(published_at=old)
    OutboxMessage.objects.filter(pk=recent.pk).update(published_at=timezone.now())
    InboxMessage.objects.create(consumer="default", message_id=uuid.uuid4(), type="ping")
    InboxMessage.objects.update(received_at=old)
    InboxMessage.objects.create(consumer="default", message_id=uuid.uuid4(), type="ping")
    assert retention_purge(batch_size=1) == {"outbox": 1, "inbox": 1}
    assert set(OutboxMessage.objects.values_list("pk", flat=True)) == {kept_unpublished.pk, recent.pk}
    assert InboxMessage.objects.count() == 1


def test_replaying_a_dead_letter_republishes_its_message_and_no_other():
    dead_message = _publish(correlation_id="saga-1")
    _publish(correlation_id="saga-2")
    OutboxMessage.objects.update(published_at=timezone.now())
    dead = DeadLetter.objects.create(
        consumer="default",
        message_id=str(dead_message.message_id),
        type="ping",
        correlation_id="saga-1",
        envelope=sent_envelope(dead_message),
        reason="boom",
    )
    replayed = dead_letter_replay(dead_letter=dead)
    assert replayed.pk == dead_message.pk  # the same row, not a copy
    assert list(OutboxMessage.objects.filter(published_at__isnull=True).values_list("pk", flat=True)) == [
        dead_message.pk
    ]
    dead.refresh_from_db()
    assert dead.status == DeadLetter.Status.REPLAYED and dead.replay_count == 1


def test_replaying_a_purged_dead_letter_recreates_its_message_with_the_same_id():
    message_id = uuid.uuid4()
    dead = DeadLetter.objects.create(
        consumer="default",
        message_id=str(message_id),
        type="ping",
        envelope={"message_id": str(message_id), "type": "ping", "destination": "default", "payload": {}},
        reason="boom",
    )
    dead_letter_replay(dead_letter=dead)
    assert OutboxMessage.objects.get(message_id=message_id).published_at is None
    dead.refresh_from_db()
    assert dead.status == DeadLetter.Status.REPLAYED and dead.replay_count == 1


def test_a_poison_dead_letter_without_a_message_id_cannot_be_replayed():
    dead = DeadLetter.objects.create(consumer="x", message_id="poison-1", envelope={"raw": "'junk'"}, reason="bad")
    with pytest.raises(ReplayRefused):
        dead_letter_replay(dead_letter=dead)


def test_backlog_counts_unpublished_messages_and_their_age():
    oldest, newer = _publish(), _publish()
    now = timezone.now()
    OutboxMessage.objects.filter(pk=oldest.pk).update(created_at=now - timedelta(seconds=30))
    OutboxMessage.objects.filter(pk=newer.pk).update(created_at=now - timedelta(seconds=5))
    backlog = outbox_backlog()
    assert backlog.count == 2
    assert 30 <= backlog.oldest_age_seconds < 40, "the age of the oldest unpublished message"


@pytest.mark.django_db(transaction=True)
def test_a_local_handler_that_fails_rolls_back_whole_and_leaves_its_message_to_the_broker(monkeypatch):
    from common.faults import faults_set
    from inventory.models import Product
    from outbox import broker, consumer

    def handle(message, _prepared):
        Product.objects.create(sku="LOCAL-FAIL", name="written, then rolled back", price_amount=100)
        raise RuntimeError("handler bug")

    faults_set()  # no injected delivery faults: inventory messages are delivered in-process
    monkeypatch.setitem(consumer._registry, ("inventory", "local_failure"), None)  # removed after the test
    register("inventory", "local_failure", handle=handle)
    sent = []
    monkeypatch.setattr(broker, "send_consume_tasks", sent.extend)

    message = _publish(type="local_failure", destination="inventory")  # commits: local delivery runs

    assert not Product.objects.filter(sku="LOCAL-FAIL").exists()
    assert not InboxMessage.objects.filter(message_id=message.message_id).exists()
    assert [envelope["message_id"] for envelope in sent] == [str(message.message_id)]
    message.refresh_from_db()
    assert message.published_at is not None and message.attempts == 1  # marked once, by the broker path
