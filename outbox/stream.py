"""The event stream: where integration events go for consumers outside the system.

Integration events (outbox.events) are outbox rows like any message, with ``STREAM_DESTINATION``
as their destination. The relay (outbox.relay) publishes them by the batch to the stream named
by the settings and marks them published only once the broker has confirmed every one of them
(publisher confirms): a batch that is not confirmed is sent again, so the stream holds each event
at least once, and a consumer deduplicates by its id (the envelope's ``message_id``). Within a
batch events go out in outbox order on one channel, so an aggregate's events keep their order.

The stream is one adapter behind :class:`EventStream`; ``settings.EVENT_STREAM_ADAPTER`` names it.
The one built here is a RabbitMQ stream (RabbitMQ 3.9+) spoken to over AMQP 0.9.1 with the
``amqp`` client (kombu's own): a durable, replicated, append-only log with a retention by age and
size (``EVENT_STREAM_MAX_AGE``, ``EVENT_STREAM_MAX_BYTES``), which consumers read at their own
pace from the first retained event, from a time, or from an offset of their own (``StreamReader``).
A shop on Kafka writes another adapter with the same three methods.

A message on the stream is the signed envelope as JSON (outbox.signing: the stream is a broker,
not a trust boundary); its AMQP properties repeat the event's id (``message_id``), type
(``type``) and order (``correlation_id``: the aggregate id) for consumers that route on them, and
its ``x-stream-offset`` header is its position.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import amqp
import orjson
from django.conf import settings
from django.utils.module_loading import import_string

from outbox.signing import signed_json

logger = logging.getLogger(__name__)

# The outbox destination of integration events: the relay sends these rows to the stream.
STREAM_DESTINATION = "stream"

Start = str | int | datetime  # "first", "last", "next", an offset, or a time


class StreamUnavailable(Exception):
    """The stream could not take or confirm a batch: nothing of it may be marked published."""


class EventStream(Protocol):
    def publish(self, envelopes: list[dict]) -> None:
        """Append the signed envelopes in order; returns once the broker confirmed every one.
        Raises StreamUnavailable otherwise."""

    def tail(self) -> int | None:
        """The offset of the last event on the stream (None when it holds none)."""

    def ping(self) -> None:
        """Raise unless the stream exists and answers."""

    def reader(self, *, start: Start, prefetch: int = 1000) -> StreamReader:
        """A consumer of the stream from ``start``."""


@dataclass(frozen=True)
class StreamRecord:
    offset: int
    body: bytes

    def envelope(self) -> Any:
        """The envelope as JSON; ValueError when the body is not JSON (orjson: a rebuild decodes
        tens of thousands a second, at a fifth of the json module's cost)."""
        return orjson.loads(self.body)


def _connection(url: str, *, name: str) -> amqp.Connection:
    parts = urlsplit(url)
    if parts.scheme not in ("amqp", "amqps"):
        raise ValueError(f"EVENT_STREAM_URL must be an amqp:// URL, not {parts.scheme or url!r}")
    connection = amqp.Connection(
        host=f"{parts.hostname or '127.0.0.1'}:{parts.port or 5672}",
        userid=unquote(parts.username or "guest"),
        password=unquote(parts.password or "guest"),
        virtual_host=unquote(parts.path[1:]) if len(parts.path) > 1 else "/",
        ssl=parts.scheme == "amqps",
        connect_timeout=5,
        read_timeout=settings.EVENT_STREAM_CONFIRM_TIMEOUT_SECONDS,
        write_timeout=settings.EVENT_STREAM_CONFIRM_TIMEOUT_SECONDS,
        client_properties={"connection_name": f"backoffice {name} {os.getpid()}"},
    )
    connection.connect()
    return connection


def stream_arguments() -> dict[str, Any]:
    """The stream's declaration: a RabbitMQ stream with the configured retention. Declaring it
    again with other arguments fails (PRECONDITION_FAILED): retention is changed by policy."""
    return {
        "x-queue-type": "stream",
        "x-max-age": settings.EVENT_STREAM_MAX_AGE,
        "x-max-length-bytes": settings.EVENT_STREAM_MAX_BYTES,
        "x-stream-max-segment-size-bytes": settings.EVENT_STREAM_SEGMENT_BYTES,
    }


class RabbitMQStream:
    """A RabbitMQ stream, published to with confirms over one connection per process."""

    def __init__(self, url: str, name: str) -> None:
        self.url = url
        self.name = name
        self._pid = 0
        self._connection: amqp.Connection | None = None
        self._channel: Any = None
        self._sent = 0  # delivery tags of this channel so far (confirm mode numbers them from 1)
        self._unconfirmed: set[int] = set()
        self._refused: list[str] = []

    # -- publishing ---------------------------------------------------------------------------

    def publish(self, envelopes: list[dict]) -> None:
        if not envelopes:
            return
        try:
            channel = self._publishing_channel()
            self._refused.clear()
            for envelope in envelopes:
                self._sent += 1
                self._unconfirmed.add(self._sent)
                channel.basic_publish(
                    amqp.Message(
                        signed_json(envelope).encode(),
                        content_type="application/json",
                        delivery_mode=2,
                        message_id=envelope["message_id"],
                        type=envelope["type"],
                        correlation_id=envelope["aggregate_id"],  # the order: a key to route or filter on
                    ),
                    exchange="",
                    routing_key=self.name,
                    mandatory=True,  # a stream that is not there returns the message, not drops it
                )
            deadline = time.monotonic() + settings.EVENT_STREAM_CONFIRM_TIMEOUT_SECONDS
            while self._unconfirmed and not self._refused:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StreamUnavailable(f"{len(self._unconfirmed)} events not confirmed in time")
                self._connection.drain_events(timeout=left)
            if self._refused:
                raise StreamUnavailable("; ".join(sorted(set(self._refused))))
        except StreamUnavailable:
            self.close()
            raise
        except (OSError, amqp.exceptions.AMQPError) as exc:
            self.close()
            raise StreamUnavailable(f"{type(exc).__name__}: {exc}") from exc

    def _publishing_channel(self) -> Any:
        if self._pid != os.getpid():  # a forked child must not share its parent's socket
            self._connection = self._channel = None
            self._pid = os.getpid()
        if self._channel is None:
            connection = _connection(self.url, name="relay")
            channel = connection.channel()
            channel.queue_declare(self.name, durable=True, auto_delete=False, arguments=stream_arguments())
            channel.confirm_select()
            channel.events["basic_ack"].add(self._on_ack)
            channel.events["basic_nack"].add(self._on_nack)
            channel.events["basic_return"].add(self._on_return)
            self._connection, self._channel, self._sent = connection, channel, 0
            self._unconfirmed.clear()
        return self._channel

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        if multiple:
            self._unconfirmed = {tag for tag in self._unconfirmed if tag > delivery_tag}
        else:
            self._unconfirmed.discard(delivery_tag)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self._on_ack(delivery_tag, multiple)
        self._refused.append("the broker refused an event (nack)")

    def _on_return(self, exc: Exception, exchange: str, routing_key: str, message: Any) -> None:
        self._refused.append(f"the broker returned an event: no stream {routing_key!r} ({exc})")

    def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        self._unconfirmed.clear()
        if connection is not None:
            try:
                connection.collect()
            except Exception:  # noqa: BLE001 - closing a broken connection
                logger.debug("event stream connection dropped")

    # -- reading ------------------------------------------------------------------------------

    def declare(self) -> None:
        """Create the stream if it is not there (publishing does the same)."""
        connection = _connection(self.url, name="declare")
        try:
            connection.channel().queue_declare(self.name, durable=True, auto_delete=False, arguments=stream_arguments())
        finally:
            connection.close()

    def ping(self) -> None:
        connection = _connection(self.url, name="health")
        try:
            connection.channel().queue_declare(self.name, passive=True)
        finally:
            connection.close()

    def delete(self) -> None:
        """Delete the stream and everything on it (tests and benchmarks use streams of their own)."""
        connection = _connection(self.url, name="delete")
        try:
            connection.channel().queue_delete(self.name)
        finally:
            connection.close()

    def reader(self, *, start: Start, prefetch: int = 1000) -> StreamReader:
        return StreamReader(self, start=start, prefetch=prefetch)

    def tail(self) -> int | None:
        """Read the stream's last chunk (``x-stream-offset: last``) and take its last offset:
        AMQP 0.9.1 has no call that tells a stream's length."""
        reader = self.reader(start="last", prefetch=1000)
        try:
            # The first burst only: the broker sends the last chunk at once, and a reader that
            # went on would follow the events written meanwhile for as long as they come.
            for batch in reader.batches(max_batch=100_000, max_wait=0.3, idle=0.05):
                return batch[-1].offset if batch else None
            return None
        finally:
            reader.close()


class StreamReader:
    """A consumer of the stream over AMQP 0.9.1: ``basic.consume`` with ``x-stream-offset``
    (streams need a prefetch and manual acks; an ack only gives credit, it removes nothing).

    ``start``: ``"first"`` (the first retained event), ``"last"`` (the last chunk), ``"next"``
    (what comes after now), an offset (a consumer's stored position), or a datetime (from about
    that time: the first chunk written at or after it, so deduplicate by id or offset)."""

    def __init__(self, stream: RabbitMQStream, *, start: Start, prefetch: int) -> None:
        self.stream = stream
        self._connection = _connection(stream.url, name="reader")
        self._channel = self._connection.channel()
        self._channel.queue_declare(stream.name, durable=True, auto_delete=False, arguments=stream_arguments())
        self._channel.basic_qos(0, prefetch, False)
        self._received: list[StreamRecord] = []
        self._prefetch = prefetch
        self._unacked = 0
        self._last_tag = 0
        self._channel.basic_consume(
            stream.name, callback=self._on_message, no_ack=False, arguments={"x-stream-offset": start}
        )

    def _on_message(self, message: Any) -> None:
        headers = message.headers or {}
        self._received.append(StreamRecord(offset=int(headers["x-stream-offset"]), body=bytes(message.body)))
        self._last_tag = message.delivery_tag
        self._unacked += 1
        if self._unacked * 2 >= self._prefetch:
            # On a stream an ack is only credit for more (the position is the consumer's own,
            # stored with its effects): given as messages come, so that the broker never waits.
            self._channel.basic_ack(self._last_tag, multiple=True)
            self._unacked = 0

    def batches(self, *, max_batch: int, max_wait: float, idle: float | None = None) -> Iterator[list[StreamRecord]]:
        """Batches of up to ``max_batch`` records, each gathered for at most ``max_wait``
        seconds; an empty batch when nothing came (or nothing more within ``idle`` seconds of
        the last record)."""
        idle = max_wait if idle is None else idle
        while True:
            deadline = time.monotonic() + max_wait
            while len(self._received) < max_batch:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    self._connection.drain_events(timeout=min(left, idle) if self._received else left)
                except TimeoutError:
                    break
            batch, self._received = self._received[:max_batch], self._received[max_batch:]
            if self._unacked and not self._received:
                self._channel.basic_ack(self._last_tag, multiple=True)
                self._unacked = 0
            yield batch

    def close(self) -> None:
        try:
            self._connection.close()
        except Exception:  # noqa: BLE001 - the connection may be gone already
            logger.debug("stream reader connection dropped")


@cache
def _installed(adapter: str, url: str, name: str) -> EventStream:
    return import_string(adapter)(url, name)


def event_stream() -> EventStream | None:
    """The configured stream, or None when ``EVENT_STREAM_URL`` is empty (no events recorded)."""
    if not settings.EVENT_STREAM_URL:
        return None
    return _installed(settings.EVENT_STREAM_ADAPTER, settings.EVENT_STREAM_URL, settings.EVENT_STREAM_NAME)
