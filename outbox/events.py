"""Integration events: facts about what happened, for consumers outside the system.

Unlike a saga's commands and replies, an event asks nothing of anyone: it says what one context
did (an order was placed, a payment captured), and any number of consumers read it from the
stream at their own pace (outbox.stream). Each event is a frozen dataclass declared in its
context's ``contracts.py`` with ``@integration_event(type, version, example=...)``: the type and
version travel in the envelope (``type``, ``headers.version``), the dataclass is the schema of
its payload, and the catalogue (``catalogue()``, ``python manage.py events_catalogue``) lists
every one with its example. A change that is not backwards compatible is a new version of the
type, published beside the old one for as long as consumers need.

``publish_event()`` writes the event through ``publish()``, in the caller's transaction: on the
stream if and only if the change that caused it committed. Every event names the aggregate its
ordering follows (an order's events never overtake each other) and inherits the correlation and
causation ids and the traceparent of the message being handled, as every message does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from django.conf import settings

from outbox.exceptions import PoisonMessage
from outbox.messages import Message, as_payload, parse_payload
from outbox.models import OutboxMessage
from outbox.publishing import publish
from outbox.stream import STREAM_DESTINATION

E = TypeVar("E")

VERSION_HEADER = "version"


@dataclass(frozen=True)
class EventSpec:
    type: str
    version: int
    schema: type
    example: dict[str, Any]

    @property
    def doc(self) -> str:
        return " ".join((self.schema.__doc__ or "").split())


_CATALOGUE: dict[tuple[str, int], EventSpec] = {}


def integration_event(type: str, version: int, *, example: dict[str, Any]) -> Callable[[type[E]], type[E]]:
    """Register a dataclass as the schema of version ``version`` of event ``type``."""

    def register(schema: type[E]) -> type[E]:
        if not dataclasses.is_dataclass(schema):
            raise TypeError(f"{schema.__name__} must be a dataclass")
        key = (type, version)
        if key in _CATALOGUE and _CATALOGUE[key].schema is not schema:
            raise ValueError(f"event {type} v{version} is declared twice")
        schema.event_type = type  # type: ignore[attr-defined]
        schema.event_version = version  # type: ignore[attr-defined]
        _CATALOGUE[key] = EventSpec(type=type, version=version, schema=schema, example=example)
        return schema

    return register


def catalogue() -> list[EventSpec]:
    """Every registered event, by type and version."""
    return [_CATALOGUE[key] for key in sorted(_CATALOGUE)]


def occurred(moment: datetime) -> str:
    """An event's time: ISO 8601 in UTC, to the microsecond."""
    return moment.astimezone(UTC).isoformat()


def events_enabled() -> bool:
    """Events are recorded only where a stream is configured (``EVENT_STREAM_URL``)."""
    return bool(settings.EVENT_STREAM_URL)


def publish_event(
    event: Any, *, aggregate: str, aggregate_id: object, correlation_id: str | None = None
) -> OutboxMessage | None:
    """Write ``event`` to the outbox for the stream, in the caller's transaction; its
    ``aggregate`` and ``aggregate_id`` say whose events it keeps in order; ``correlation_id``
    where no message being handled gives one (the saga an order starts). Nothing is written
    (None) where no stream is configured."""
    if not events_enabled():
        return None
    schema = type(event)
    if (getattr(schema, "event_type", None), getattr(schema, "event_version", None)) not in _CATALOGUE:
        raise TypeError(f"{schema.__name__} is not a registered integration event")
    return publish(
        type=schema.event_type,
        destination=STREAM_DESTINATION,
        payload=as_payload(event),
        aggregate=aggregate,
        aggregate_id=aggregate_id,
        headers={VERSION_HEADER: schema.event_version},
        correlation_id=correlation_id,
    )


def parse_event(envelope: object) -> tuple[Message, Any]:
    """The message and its typed event; a PoisonMessage when the envelope is malformed, of an
    unknown type or version, or its payload does not fit the schema."""
    message = Message.from_envelope(envelope)
    version = message.headers.get(VERSION_HEADER)
    spec = _CATALOGUE.get((message.type, version)) if isinstance(version, int) else None
    if spec is None:
        raise PoisonMessage(f"unknown event {message.type!r} version {version!r}")
    return message, parse_payload(spec.schema, message.payload)
