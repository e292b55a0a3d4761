"""After a commit: the one path by which a transaction's messages leave.

``publish()`` adds each message it writes to its transaction's ``CommittedMessages``, which runs
once, right after the commit (Django drops it, and with it the ids of the rolled-back rows, with
the callbacks of a transaction that rolls back). Then, until no message remains:

1. the messages whose handler lives in this process (``deliver_here``, and the consumers of
   settings.OUTBOX_LOCAL_CONSUMERS without an outside call) are handed to it, all in one
   transaction that also marks them published; the messages those handlers publish are
   collected for the next round (no nested after-commit callback);
2. the others are sent to the broker;
3. whatever could not be delivered or sent is the relay's, which is nudged; so are integration
   events (outbox.events), which the relay publishes to the stream by the batch with confirms.

A web request (``relay_sends()``, outbox.middleware) only delivers its ``deliver_here`` messages
and nudges the relay: sending costs three round trips to PostgreSQL and one to Redis per
transaction, spent on the client's time and on the web's CPU, while the relay sends a whole
batch for the price of one. The first command of an order's saga leaves a few milliseconds
later, not the answer to the client.

Order per aggregate holds on every path: a message is claimed only when no older message of its
aggregate is unpublished (``relay.claim_committed``), under the relay's lock held shared.
"""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from django.conf import settings
from django.db import transaction

from outbox import broker
from outbox.consumer import deliver, registered
from outbox.models import OutboxMessage, envelope_of
from outbox.nudge import nudge_relay
from outbox.relay import claim_committed, send_committed
from outbox.stream import STREAM_DESTINATION

logger = logging.getLogger(__name__)

# Set while a web request runs (outbox.middleware): its commits nudge the relay rather than
# send their messages themselves.
_relay_sends = ContextVar("outbox_relay_sends", default=False)
# Set while the handlers of one round run: what they publish joins the next round.
_next_round: ContextVar["CommittedMessages | None"] = ContextVar("outbox_next_round", default=None)


@contextmanager
def relay_sends() -> Iterator[None]:
    """Leave the messages committed inside to the relay, nudged by each commit."""
    token = _relay_sends.set(True)
    try:
        yield
    finally:
        _relay_sends.reset(token)


class CommittedMessages:
    """The messages one transaction published, delivered as soon as it commits."""

    def __init__(self) -> None:
        self.here_ids: list[int] = []  # published with deliver_here
        self.local_ids: list[int] = []  # for a consumer of this process without an outside call
        self.remote_ids: list[int] = []
        self.events = False  # integration events: always the relay's, which publishes them by the batch

    def add(self, message: OutboxMessage, *, here: bool = False) -> None:
        if message.destination == STREAM_DESTINATION:
            self.events = True
        elif here:
            self.here_ids.append(message.pk)
        elif _has_local_handler(message):
            self.local_ids.append(message.pk)
        else:
            self.remote_ids.append(message.pk)

    def __bool__(self) -> bool:
        return bool(self.here_ids or self.local_ids or self.remote_ids or self.events)

    def __call__(self) -> None:
        deliver_committed(self)


def messages_of_this_transaction() -> CommittedMessages:
    """Where ``publish()`` records a message: the next round's, inside a round's handlers;
    otherwise the current transaction's, registered once with on_commit."""
    collecting = _next_round.get()
    if collecting is not None:
        return collecting
    connection = transaction.get_connection()
    for _, callback, _ in connection.run_on_commit:
        if isinstance(callback, CommittedMessages):
            return callback
    committed = CommittedMessages()
    transaction.on_commit(committed)
    return committed


def deliver_committed(committed: CommittedMessages) -> None:
    """Deliver a committed transaction's messages, round by round (see the module's docstring)."""
    web = _relay_sends.get()
    left_to_relay = web  # a web request's messages are the relay's, but for deliver_here
    pending: CommittedMessages | None = committed
    while pending:
        left_to_relay = left_to_relay or pending.events
        in_process = broker.allows_delivery_in_process() and not web
        here = pending.here_ids + (pending.local_ids if in_process else [])
        to_broker = [] if web else pending.remote_ids + ([] if in_process else pending.local_ids)
        pending, undelivered = _deliver_here(here)
        to_broker += [] if web else undelivered
        if to_broker and _send(to_broker) < len(to_broker):
            left_to_relay = True
    if left_to_relay:
        nudge_relay()


def _deliver_here(ids: list[int]) -> tuple[CommittedMessages | None, list[int]]:
    """Hand messages to their handlers in this process, in one transaction with marking them
    published: a broker round trip and a task less per message. Returns what the handlers
    published (the next round) and the ids not delivered here (for the broker).

    The handlers run through the same inbox wrapper as a delivered message, in this one
    transaction and without savepoints (two round trips fewer per message): any failure rolls
    all of it back, what they published with it, and the messages go through the broker, whose
    delivery retries or dead-letters them. A crash rolls everything back and the relay sends the
    messages.
    """
    if not ids:
        return None, []
    published = CommittedMessages()
    token = _next_round.set(published)
    try:
        with transaction.atomic():
            rows = claim_committed(ids)
            for row in rows:
                deliver(envelope_of(row), local=True)  # handled or a duplicate
    except Exception as exc:  # noqa: BLE001 - the broker path takes over
        logger.warning(
            "local delivery failed; sending through the broker", extra={"error": f"{type(exc).__name__}: {exc}"}
        )
        return None, ids
    finally:
        _next_round.reset(token)
    delivered = {row["id"] for row in rows}
    logger.debug("delivered locally", extra={"delivered": len(delivered), "asked": len(ids)})
    return published, [pk for pk in ids if pk not in delivered]


def _send(ids: list[int]) -> int:
    try:
        return send_committed(ids)
    except Exception as exc:  # noqa: BLE001 - the relay is the safety net for any failure here
        logger.warning("direct dispatch failed; the relay will send", extra={"error": str(exc)})
        return 0


def _has_local_handler(message: OutboxMessage) -> bool:
    """A consumer configured to run in every process (settings.OUTBOX_LOCAL_CONSUMERS) whose
    handler makes no outside call (no ``prepare``, which must never run inside a transaction)."""
    if message.destination not in settings.OUTBOX_LOCAL_CONSUMERS:
        return False
    registration = registered(message.destination, message.type)
    return registration is not None and registration.prepare is None
