"""The message envelope every context exchanges, and parsing of typed payloads."""

import contextvars
import dataclasses
import functools
import types
import typing
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from outbox.exceptions import PoisonMessage

_ENVELOPE_FIELDS = ("message_id", "type", "destination", "payload")

P = TypeVar("P")


class Channel(typing.NamedTuple):
    """Where a message of one type goes: its consumer and its type. A context's contracts
    module declares one per command, reply or event, so that sender and handler share it."""

    destination: str
    type: str


@dataclass(frozen=True)
class Message:
    message_id: str
    type: str
    destination: str
    payload: dict[str, Any]
    aggregate: str = ""
    aggregate_id: str = ""
    correlation_id: str = ""
    causation_id: str = ""
    traceparent: str = ""
    created_at: str = ""
    headers: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_envelope(cls, raw: object) -> "Message":
        """Parse a delivered envelope; anything malformed is a poison message."""
        if not isinstance(raw, dict):
            raise PoisonMessage(f"the envelope is a {type(raw).__name__}, not an object")
        missing = [name for name in _ENVELOPE_FIELDS if name not in raw]
        if missing:
            raise PoisonMessage(f"the envelope lacks {', '.join(missing)}")
        try:
            uuid.UUID(str(raw["message_id"]))
        except ValueError:
            raise PoisonMessage(f"message_id {raw['message_id']!r} is not a uuid") from None
        if not isinstance(raw["payload"], dict):
            raise PoisonMessage("the payload is not an object")
        if not isinstance(raw.get("headers", {}), dict):
            raise PoisonMessage("the headers are not an object")
        values = {key: value for key, value in raw.items() if key in _MESSAGE_FIELDS}
        for name in ("message_id", "type", "destination", "aggregate", "aggregate_id", "correlation_id"):
            if name in values:
                values[name] = str(values[name] or "")
        return cls(**values)

    def parse(self, payload_class: type[P]) -> P:
        return parse_payload(payload_class, self.payload)


_MESSAGE_FIELDS = frozenset(f.name for f in dataclasses.fields(Message))


def parse_payload(payload_class: type[P], payload: dict[str, Any]) -> P:
    """Build a payload dataclass, checking field names and plain types; else a PoisonMessage."""
    fields, names = _schema(payload_class)
    if not names.issuperset(payload):
        raise PoisonMessage(f"{payload_class.__name__}: unknown fields {sorted(set(payload) - names)}")
    values = {}
    for name, required, hint, matches in fields:
        if name not in payload:
            if required:
                raise PoisonMessage(f"{payload_class.__name__}: missing field {name!r}")
            continue
        value = payload[name]
        if not matches(value):
            raise PoisonMessage(f"{payload_class.__name__}.{name}: {value!r} is not {hint}")
        values[name] = value
    return payload_class(**values)


@functools.cache
def _schema(payload_class: type) -> tuple[list[tuple[str, bool, Any, Callable[[Any], bool]]], frozenset[str]]:
    """A payload class's fields (name, required, type hint, its check) and their names, worked
    out once per class: resolving the hints cost more than the rest of a parse."""
    hints = typing.get_type_hints(payload_class)
    fields = [
        (
            spec.name,
            spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING,
            hints[spec.name],
            _checker(hints[spec.name]),
        )
        for spec in dataclasses.fields(payload_class)
    ]
    return fields, frozenset(name for name, *_ in fields)


def _matches(value: Any, hint: Any) -> bool:
    return _checker(hint)(value)


@functools.cache
def _checker(hint: Any) -> Callable[[Any], bool]:
    """The check of a value against a type hint, built once per hint."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return lambda value: True
    if origin in (typing.Union, types.UnionType):
        checks = tuple(_checker(arg) for arg in typing.get_args(hint))
        return lambda value: any(check(value) for check in checks)
    if hint is type(None):
        return lambda value: value is None
    if origin in (list, tuple):
        return lambda value: isinstance(value, list)
    if origin is dict:
        return lambda value: isinstance(value, dict)
    if hint is int:
        return lambda value: isinstance(value, int) and not isinstance(value, bool)
    if isinstance(hint, type):
        return lambda value: isinstance(value, hint)
    return lambda value: True


def as_payload(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else dict(obj)


_current_message: contextvars.ContextVar[Message | None] = contextvars.ContextVar("current_message", default=None)


def current_message() -> Message | None:
    """The message being handled right now, whose ids further messages inherit."""
    return _current_message.get()


def set_current_message(message: Message | None) -> contextvars.Token:
    return _current_message.set(message)


def reset_current_message(token: contextvars.Token) -> None:
    _current_message.reset(token)
