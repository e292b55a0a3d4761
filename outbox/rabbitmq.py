"""Putting consume tasks on RabbitMQ, a batch at a time, with publisher confirms.

The relay marks a batch published once ``publish_confirmed`` returns, so it returns only when
the broker confirmed every message of it (on a quorum queue: written by a majority of its
nodes). Anything less raises, and nothing is marked: a message the broker nacked or returned
(no queue bound), a confirm that did not come in time, a connection lost in between. The relay
then sends the whole batch again, and the consumers' inbox absorbs the copies that did arrive.

The messages are ``outbox.broker.task_message``'s, the ones the Redis path writes, published
through kombu's Producer to the destination queue's exchange and routing key, as Celery's
``send_task`` would (a test compares them with what Celery puts on the queue). All are published
first, then the confirms awaited: one round trip per batch, not per message.

Each thread of each process keeps one connection of its own, made by the Celery app (same URL,
TLS and login as every other), with a channel in confirm mode. Not one of the app's pool: those
confirm each publish by itself (``confirm_publish``, for Celery's own retries and nudges), which
would cost a round trip per message.
"""

import logging
import os
import threading
import time
from typing import Any

from celery import current_app as celery_app
from django.conf import settings
from kombu import Connection, Producer
from kombu.common import maybe_declare

from outbox.broker import task_message, task_sender
from outbox.exceptions import BrokerUnconfirmed

logger = logging.getLogger(__name__)


class ConfirmedPublisher:
    """One connection and one channel in confirm mode; not shared between threads."""

    def __init__(self) -> None:
        self._pid = 0
        self._connection: Connection | None = None
        self._producer: Producer | None = None
        self._sent = 0  # delivery tags of this channel so far (confirm mode numbers them from 1)
        self._unconfirmed: set[int] = set()
        self._refused: list[str] = []

    def publish(self, envelopes: list[dict]) -> None:
        """Publish every envelope's task; returns once the broker confirmed all of them."""
        if not envelopes:
            return
        reused = self._producer is not None and self._pid == os.getpid()
        try:
            self._publish(envelopes)
        except BrokerUnconfirmed:
            self.close()
            raise
        except Exception as exc:
            self.close()
            if not reused:
                raise BrokerUnconfirmed(f"{type(exc).__name__}: {exc}") from exc
            # A connection that went stale while idle fails at its first publish: one more try on
            # a new one before the batch is given back. Copies the first try delivered are
            # absorbed by the inbox.
            logger.info("broker connection lost; publishing the batch again", extra={"error": str(exc)})
            try:
                self._publish(envelopes)
            except Exception as again:
                self.close()
                raise BrokerUnconfirmed(f"{type(again).__name__}: {again}") from again

    def _publish(self, envelopes: list[dict]) -> None:
        producer = self._confirming_producer()
        queues = {name: celery_app.amqp.queues[name] for name in {envelope["destination"] for envelope in envelopes}}
        for queue in queues.values():
            # Declared once per connection (kombu remembers), so a queue no worker declared yet
            # still keeps the message. Once per batch, not per message: a fifth of the CPU.
            maybe_declare(queue, producer.channel, retry=False)
        sender = task_sender()
        self._refused.clear()
        for envelope in envelopes:
            queue = queues[envelope["destination"]]
            body, headers, properties = task_message(envelope, **sender)
            self._sent += 1
            self._unconfirmed.add(self._sent)
            producer.publish(
                body,
                exchange=queue.exchange.name,
                routing_key=queue.routing_key,
                headers=headers,
                content_type="application/json",
                content_encoding="utf-8",
                # A message no queue is bound for comes back instead of vanishing.
                mandatory=True,
                retry=False,
                **properties,
            )
        self._wait_for_confirms()

    def _wait_for_confirms(self) -> None:
        assert self._connection is not None
        deadline = time.monotonic() + settings.OUTBOX_BROKER_CONFIRM_TIMEOUT_SECONDS
        while self._unconfirmed and not self._refused:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrokerUnconfirmed(f"{len(self._unconfirmed)} messages not confirmed in time")
            try:
                self._connection.drain_events(timeout=left)
            except TimeoutError:
                continue
        if self._refused:
            raise BrokerUnconfirmed("; ".join(sorted(set(self._refused))))

    def _confirming_producer(self) -> Producer:
        if self._pid != os.getpid():  # a forked child must not share its parent's socket
            self._connection = self._producer = None
            self._pid = os.getpid()
        if self._producer is None:
            options = {**(celery_app.conf.broker_transport_options or {}), "confirm_publish": False}
            connection = celery_app.connection_for_write(transport_options=options)
            # One attempt: a broker that is down gives the batch back at once, and the relay's
            # next run (a second later) tries again, instead of holding its claim while retrying.
            connection.ensure_connection(max_retries=0)
            channel = connection.channel()
            channel.confirm_select()
            channel.events["basic_ack"].add(self._on_ack)
            channel.events["basic_nack"].add(self._on_nack)
            channel.events["basic_return"].add(self._on_return)
            self._connection, self._producer, self._sent = connection, Producer(channel), 0
            self._unconfirmed.clear()
        return self._producer

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        if multiple:
            self._unconfirmed = {tag for tag in self._unconfirmed if tag > delivery_tag}
        else:
            self._unconfirmed.discard(delivery_tag)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self._on_ack(delivery_tag, multiple)
        self._refused.append("the broker refused a message (nack)")

    def _on_return(self, exc: Exception, exchange: str, routing_key: str, message: Any) -> None:
        self._refused.append(f"the broker returned a message: no queue for {routing_key!r} ({exc})")

    def close(self) -> None:
        connection, self._connection, self._producer = self._connection, None, None
        self._unconfirmed.clear()
        if connection is not None:
            try:
                connection.collect()
            except Exception:  # noqa: BLE001 - closing a broken connection
                logger.debug("relay broker connection dropped")


_local = threading.local()


def publish_confirmed(envelopes: list[dict]) -> None:
    """Publish on this thread's connection; raises BrokerUnconfirmed unless all were confirmed."""
    publisher = getattr(_local, "publisher", None)
    if publisher is None:
        publisher = _local.publisher = ConfirmedPublisher()
    publisher.publish(envelopes)
