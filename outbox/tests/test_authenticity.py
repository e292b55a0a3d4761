"""A message takes effect only if this system wrote it: forged and altered messages put on the
real Redis broker, by a bare Celery client or by hand, are consumed by the real worker, change
no money and become "not authentic" dead letters."""

import base64
import json
import logging
import uuid
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st

from config.celery import app
from conftest import wait_for
from outbox import signing
from outbox.broker import _redis_broker, task_document
from outbox.consumer import deliver
from outbox.models import DeadLetter, InboxMessage, OutboxMessage
from outbox.publishing import publish
from outbox.services import ReplayRefused, dead_letter_replay
from payments.models import GatewayCharge, LedgerEntry, Payment
from sagas.keys import step_key
from testing.messages import sent_envelope

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def _saga_headers(saga_id: str, step: str, phase: str) -> dict:
    key = step_key(saga_id, step, compensation=phase == "compensation")
    headers = {"saga_id": saga_id, "step": step, "phase": phase, "attempt": 1, "idempotency_key": key}
    if phase == "compensation":
        headers["compensates"] = step_key(saga_id, step)
    return headers


def _charged_order(order_id: int) -> tuple[str, Payment]:
    """A genuine charge, through the outbox and the worker: the money a forgery would move."""
    saga_id = str(uuid.uuid4())
    with transaction.atomic():
        publish(
            type="charge_payment",
            destination="payments",
            payload={"order_id": order_id, "amount": 1500, "currency": "EUR", "token": "tok_visa"},
            aggregate="saga",
            aggregate_id=saga_id,
            correlation_id=saga_id,
            headers=_saga_headers(saga_id, "charge_payment", "forward"),
        )
    wait_for(lambda: Payment.objects.filter(order_id=order_id, status=Payment.Status.CHARGED).exists(), timeout=30)
    return saga_id, Payment.objects.get(order_id=order_id)


def _refund_envelope(saga_id: str, order_id: int) -> dict:
    """What the orchestrator's refund command for this saga looks like on the wire."""
    return {
        "message_id": str(uuid.uuid4()),
        "type": "refund_payment",
        "destination": "payments",
        "aggregate": "saga",
        "aggregate_id": saga_id,
        "correlation_id": saga_id,
        "causation_id": "",
        "traceparent": "",
        "created_at": timezone.now().isoformat(),
        "payload": {"order_id": order_id, "charge_key": step_key(saga_id, "charge_payment")},
        "headers": _saga_headers(saga_id, "charge_payment", "compensation"),
    }


def _money() -> tuple:
    return (
        sorted(LedgerEntry.objects.values_list("order_id", "kind", "amount")),
        sorted(GatewayCharge.objects.values_list("kind", "amount", "succeeded")),
        sorted(Payment.objects.values_list("order_id", "status")),
    )


def _not_authentic(**filters) -> DeadLetter:
    wait_for(lambda: DeadLetter.objects.filter(reason="not authentic", **filters).exists(), timeout=30)
    return DeadLetter.objects.get(reason="not authentic", **filters)


def _refunded(order_id: int) -> bool:
    return Payment.objects.filter(order_id=order_id, status=Payment.Status.REFUNDED).exists()


def test_a_forged_refund_sent_by_a_bare_celery_client_moves_no_money_and_is_dead_lettered(live_system):
    saga_id, payment = _charged_order(order_id=7001)
    before = _money()
    forged = _refund_envelope(saga_id, payment.order_id)

    # Anyone who can write to the broker: the relay's task name, queue and envelope shape, unsigned,
    # and once more with a signature made under a key that is not ours.
    app.send_task("outbox.consume", args=[forged], queue="payments")
    wrong_key = {**forged, "message_id": str(uuid.uuid4())}
    wrong_key["signature"] = "0" * 64
    app.send_task("outbox.consume", args=[wrong_key], queue="payments")

    dead = _not_authentic(message_id=forged["message_id"])
    _not_authentic(message_id=wrong_key["message_id"])
    assert dead.poison and dead.consumer == "payments" and dead.type == "refund_payment"
    assert dead.envelope["payload"] == forged["payload"]  # kept as evidence
    assert _money() == before, "no ledger entry, no gateway refund, the payment still charged"
    assert not InboxMessage.objects.filter(message_id__in=[forged["message_id"], wrong_key["message_id"]]).exists()
    with pytest.raises(ReplayRefused, match="not authentic"):
        dead_letter_replay(dead_letter=dead)  # the relay would sign it: never replayed as it is
    assert not OutboxMessage.objects.filter(message_id=forged["message_id"]).exists()

    # The very same command, written by this system, does refund: the forgery was a real threat.
    with transaction.atomic():
        fields = ("type", "destination", "payload", "aggregate", "aggregate_id", "correlation_id", "headers")
        publish(**{name: forged[name] for name in fields})
    wait_for(lambda: _refunded(payment.order_id), timeout=30)


def test_a_genuine_message_altered_on_the_broker_is_dead_lettered_and_the_original_still_works(live_system):
    saga_id, payment = _charged_order(order_id=7002)
    _other_saga, other = _charged_order(order_id=7003)
    before = _money()
    # A genuine refund of order 7002, as the relay writes it on Redis (not due: the relay leaves it).
    fields = {name: value for name, value in _refund_envelope(saga_id, 7002).items() if name != "created_at"}
    genuine = OutboxMessage.objects.create(**fields, available_at=timezone.now() + timedelta(hours=1))
    redis, prefix = _redis_broker()
    sender = {"origin": "relay@test", "reply_to": str(uuid.uuid4()), "time_limits": [90, 60]}
    document = task_document(sent_envelope(genuine), queue="payments", **sender)

    # Someone edits it on the broker: the refund now points at order 7003's charge.
    (args, kwargs, embed) = json.loads(base64.b64decode(document["body"]))
    args[0]["payload"] = {"order_id": 7003, "charge_key": other.idempotency_key}
    altered = {**document, "body": base64.b64encode(json.dumps([args, kwargs, embed]).encode()).decode()}
    redis.lpush(prefix + "payments", json.dumps(altered))

    dead = _not_authentic(message_id=str(genuine.message_id))
    assert dead.envelope["payload"]["order_id"] == 7003
    assert _money() == before, "neither order refunded"

    # The genuine document, unaltered, is accepted.
    redis.lpush(prefix + "payments", json.dumps(document))
    wait_for(lambda: _refunded(7002), timeout=30)
    assert not _refunded(7003)


def test_an_envelope_altered_in_any_field_is_not_authentic():
    envelope = _refund_envelope(str(uuid.uuid4()), 1)
    sent = signing.signed(envelope)
    assert signing.is_authentic(sent)
    assert signing.is_authentic(json.loads(signing.signed_json(envelope)))
    for name, value in [*((name, "x") for name in envelope), ("extra", 1)]:
        assert not signing.is_authentic({**sent, name: value}), name
    assert not signing.is_authentic({**sent, "headers": {**envelope["headers"], "phase": "forward"}})
    assert not signing.is_authentic(envelope) and not signing.is_authentic("text") and not signing.is_authentic(None)


def test_a_rotated_key_still_verifies_what_the_old_one_signed(settings):
    envelope = _refund_envelope(str(uuid.uuid4()), 1)
    settings.OUTBOX_SIGNING_KEYS = ["old-key-" + "o" * 40]
    under_old = signing.signed(envelope)
    settings.OUTBOX_SIGNING_KEYS = ["new-key-" + "n" * 40, "old-key-" + "o" * 40]
    assert signing.is_authentic(under_old)
    assert signing.signed(envelope)["signature"] != under_old["signature"]  # the first key signs
    settings.OUTBOX_SIGNING_KEYS = ["new-key-" + "n" * 40]
    assert not signing.is_authentic(under_old)


def test_a_forgery_never_replaces_a_genuine_dead_letter_of_the_same_id_and_raises_an_alert(caplog):
    genuine = DeadLetter.objects.create(
        consumer="payments", message_id=str(uuid.uuid4()), type="refund_payment", envelope={"payload": {}}, reason="x"
    )
    forged = {**_refund_envelope(str(uuid.uuid4()), 1), "message_id": genuine.message_id}
    with caplog.at_level(logging.ERROR, logger="outbox.consumer"):
        assert deliver(forged, queue="payments") == "dead_letter"
    (alert,) = [record for record in caplog.records if getattr(record, "alert", None) == "message_not_authentic"]
    assert alert.levelno == logging.ERROR and alert.claimed_type == "refund_payment"
    genuine.refresh_from_db()
    assert genuine.reason == "x" and genuine.envelope == {"payload": {}}
    assert DeadLetter.objects.get(reason="not authentic").message_id.startswith("forged-")


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(envelope=st.dictionaries(st.text(max_size=12).filter(lambda k: k != signing.SIGNATURE), _json_values))
def test_checking_the_received_text_agrees_with_checking_the_decoded_envelope(envelope):
    """is_authentic_text (on the bytes, for the stream's consumer) and is_authentic (on the
    decoded envelope) give the same answer: for the text as signed, for any byte altered in it,
    and for the same envelope spelt differently."""
    text = signing.signed_json(envelope).encode()
    assert signing.is_authentic_text(text) and signing.is_authentic(json.loads(text))
    respelt = json.dumps(json.loads(text), indent=1).encode()
    assert signing.is_authentic_text(respelt) == signing.is_authentic(json.loads(respelt)) is True
    for position in range(0, len(text), max(1, len(text) // 12)):
        altered = text[:position] + bytes([text[position] ^ 0x01]) + text[position + 1 :]
        try:
            decoded_verdict = signing.is_authentic(json.loads(altered))
        except ValueError:
            decoded_verdict = False
        assert signing.is_authentic_text(altered) == decoded_verdict
