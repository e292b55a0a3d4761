"""A participant's business failure: the failure reply commits alone; a handler that wrote
before failing has nothing committed. Messages are handled in the test process."""

import uuid

import pytest
from django.db import transaction

from inventory.exceptions import OutOfStock
from inventory.handlers import BOOK
from inventory.models import StockMovement
from inventory.services import product_upsert, stock_receive
from outbox.consumer import deliver, registration_for
from outbox.models import DeadLetter, InboxMessage, OutboxMessage
from outbox.publishing import publish
from sagas.exceptions import BusinessFailure
from sagas.messages import ORCHESTRATOR, REPLY_TYPE
from sagas.outcomes import Decision
from sagas.participant import may_write, saga_participant
from testing.messages import sent_envelope

pytestmark = pytest.mark.django_db

CONSUMER = "inventory"


def _headers() -> dict:
    saga_id = str(uuid.uuid4())
    return {"saga_id": saga_id, "step": "probe", "phase": "forward", "attempt": 1, "idempotency_key": saga_id}


def _command(type: str) -> dict:
    with transaction.atomic():
        message = publish(
            type=type, destination=CONSUMER, payload={}, aggregate="saga", aggregate_id=1, headers=_headers()
        )
    return sent_envelope(message)


@pytest.fixture
def product():
    product = product_upsert(sku="SKU-P", name="Probe", price_amount=100)
    stock_receive(product=product, quantity=5)
    return product


def test_a_business_failure_before_any_write_commits_the_failure_reply(product):
    def refuse(message, _):
        raise BusinessFailure("no such thing")

    saga_participant(CONSUMER, "probe_refuse", handle=refuse, book=BOOK)
    envelope = _command("probe_refuse")

    assert deliver(envelope) == "handled"

    reply = OutboxMessage.objects.get(type=REPLY_TYPE, destination=ORCHESTRATOR, causation_id=envelope["message_id"])
    assert (reply.payload["outcome"], reply.payload["error"]) == ("business_failure", "no such thing")
    assert InboxMessage.objects.filter(message_id=envelope["message_id"]).exists()


def test_a_context_refusal_named_at_registration_is_answered_as_a_business_failure(product):
    def refuse(message, _):
        raise OutOfStock("out of stock: SKU-P (wanted 9, available 5)")

    saga_participant(CONSUMER, "probe_domain_refuse", handle=refuse, book=BOOK, business_failures=(OutOfStock,))
    envelope = _command("probe_domain_refuse")

    assert deliver(envelope) == "handled"

    reply = OutboxMessage.objects.get(type=REPLY_TYPE, destination=ORCHESTRATOR, causation_id=envelope["message_id"])
    assert (reply.payload["outcome"], reply.payload["error"]) == (
        "business_failure",
        "out of stock: SKU-P (wanted 9, available 5)",
    )
    assert InboxMessage.objects.filter(message_id=envelope["message_id"]).exists()
    assert BOOK.peek(envelope["headers"]["idempotency_key"]) == Decision.REFUSED


def test_a_context_refusal_after_a_write_keeps_nothing_as_a_business_failure_would(product, settings):
    settings.OUTBOX_MAX_ATTEMPTS = 2
    movements = StockMovement.objects.count()

    def write_then_refuse(message, _):
        StockMovement.objects.create(product=product, kind="receipt", quantity=1, idempotency_key="probe")
        raise OutOfStock("changed my mind")

    saga_participant(
        CONSUMER, "probe_domain_write_then_refuse", handle=write_then_refuse, book=BOOK, business_failures=(OutOfStock,)
    )
    envelope = _command("probe_domain_write_then_refuse")

    with pytest.raises(Exception, match="wrote before raising a business failure"):
        deliver(envelope, attempt=0)
    assert deliver(envelope, attempt=1) == "dead_letter"
    assert StockMovement.objects.count() == movements
    assert "wrote before raising a business failure" in DeadLetter.objects.get(message_id=envelope["message_id"]).reason


def test_a_handler_that_writes_then_fails_keeps_nothing_and_ends_as_a_dead_letter(product, settings):
    settings.OUTBOX_MAX_ATTEMPTS = 2
    movements = StockMovement.objects.count()

    def write_then_refuse(message, _):
        StockMovement.objects.create(product=product, kind="receipt", quantity=1, idempotency_key="probe")
        raise BusinessFailure("changed my mind")

    saga_participant(CONSUMER, "probe_write_then_refuse", handle=write_then_refuse, book=BOOK)
    assert registration_for(CONSUMER, "probe_write_then_refuse").prepare is None
    envelope = _command("probe_write_then_refuse")

    with pytest.raises(Exception, match="wrote before raising a business failure"):
        deliver(envelope, attempt=0)
    assert deliver(envelope, attempt=1) == "dead_letter"

    assert StockMovement.objects.count() == movements
    assert not InboxMessage.objects.filter(message_id=envelope["message_id"]).exists()
    dead = DeadLetter.objects.get(message_id=envelope["message_id"])
    assert "wrote before raising a business failure" in dead.reason
    # The dead letter tells the saga, as a technical failure, not as the business failure.
    reply = OutboxMessage.objects.get(type=REPLY_TYPE, causation_id=envelope["message_id"])
    assert reply.payload["outcome"] == "technical_failure"


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO t VALUES (1)",
        "  update t SET a = 1",
        "DELETE FROM t",
        "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE",
        "WITH placed AS (INSERT INTO t VALUES (1) RETURNING id) SELECT id FROM placed",
        "-- a comment\nINSERT INTO t VALUES (1)",
        "/* a comment */ UPDATE t SET a = 1",
        "TRUNCATE t",
        "COPY t FROM STDIN",
    ],
)
def test_every_kind_of_write_is_noticed(sql):
    assert may_write(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM t",
        'SELECT "t"."id" FROM "t" WHERE "t"."id" = 1 FOR UPDATE',
        "WITH r AS (SELECT id FROM t) SELECT * FROM r FOR NO KEY UPDATE",
        'SAVEPOINT "s1"',
        'RELEASE SAVEPOINT "s1"',
        'ROLLBACK TO SAVEPOINT "s1"',
    ],
)
def test_reads_and_savepoints_are_not_writes(sql):
    assert not may_write(sql)
