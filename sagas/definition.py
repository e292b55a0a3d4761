"""Declaring a saga: an ordered list of steps, each with its action and compensation.

A step's action and compensation are small functions that turn the saga's typed data into
the command of one context, built from that context's contract (``Command.of``). A step's
``on_reply`` (and ``on_compensated``) says which of the saga's data its reply changes: data
never flows in by a field name that happens to match. Compensatable steps come first, then
the pivot, then the steps that can only be retried (they run after the pivot and are never
compensated).
"""

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Any

from outbox.messages import Channel, as_payload


class StepKind(StrEnum):
    COMPENSATABLE = "compensatable"
    RETRIABLE = "retriable"


@dataclass(frozen=True)
class Command:
    destination: str
    type: str
    payload: dict[str, Any]

    @classmethod
    def of(cls, contract: Any) -> "Command":
        """The command of a contract dataclass, sent on the channel its class declares."""
        channel: Channel = type(contract).channel
        return cls(channel.destination, channel.type, as_payload(contract))


@dataclass(frozen=True)
class Compensating:
    """What the engine tells a compensation besides the saga's data: the key of the forward
    step it undoes (the participant finds that step's effect by it), and why the saga is
    compensating."""

    forward_key: str
    failure_reason: str = ""


CommandBuilder = Callable[[Any], Command]
CompensationBuilder = Callable[[Any, Compensating], Command]
# (the saga's data, the reply's data) -> the saga's data fields that the reply changes.
ReplyHandler = Callable[[Any, dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Step:
    name: str
    action: CommandBuilder | None = None
    compensation: CompensationBuilder | None = None
    kind: StepKind = StepKind.COMPENSATABLE
    on_reply: ReplyHandler | None = None
    on_compensated: ReplyHandler | None = None
    # None: the engine's defaults (settings.SAGA_STEP_DEADLINE_SECONDS and friends).
    deadline: timedelta | None = None

    def __post_init__(self) -> None:
        if self.kind == StepKind.RETRIABLE and self.compensation is not None:
            raise ValueError(f"step {self.name}: a retriable step is never compensated")

    @property
    def is_local(self) -> bool:
        """A step whose action happened when the saga started (e.g. creating the order)."""
        return self.action is None


@dataclass(frozen=True)
class SagaDefinition:
    name: str
    version: int
    data_class: type
    steps: list[Step] = field(default_factory=list)

    def __post_init__(self) -> None:
        names = [step.name for step in self.steps]
        if len(set(names)) != len(names):
            raise ValueError(f"saga {self.name}: step names must be unique")
        kinds = [step.kind for step in self.steps]
        if kinds != sorted(kinds, key=list(StepKind).index):
            raise ValueError(f"saga {self.name}: compensatable steps, then the pivot, then retriable steps")

    def step(self, name: str) -> Step:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(f"saga {self.name} v{self.version} has no step {name!r}")

    def index(self, name: str) -> int:
        return [step.name for step in self.steps].index(name)

    def load(self, data: dict[str, Any]) -> Any:
        """The saga's typed data from its stored form; a field a later version dropped is left out."""
        known = {f.name for f in dataclasses.fields(self.data_class)}
        return self.data_class(**{key: value for key, value in data.items() if key in known})

    def dump(self, data: Any) -> dict[str, Any]:
        return dataclasses.asdict(data)


_definitions: dict[tuple[str, int], SagaDefinition] = {}
_latest: dict[str, SagaDefinition] = {}


def register_definition(definition: SagaDefinition) -> SagaDefinition:
    """Register a definition version. Older versions stay registered so that sagas started on
    them finish on them: a deploy that adds a step never breaks a saga in flight."""
    _definitions[(definition.name, definition.version)] = definition
    current = _latest.get(definition.name)
    if current is None or definition.version >= current.version:
        _latest[definition.name] = definition
    return definition


def unregister_definition(name: str, version: int) -> None:
    _definitions.pop((name, version), None)
    remaining = [d for (n, _), d in _definitions.items() if n == name]
    if remaining:
        _latest[name] = max(remaining, key=lambda d: d.version)
    else:
        _latest.pop(name, None)


def definition_for(name: str, version: int) -> SagaDefinition:
    try:
        return _definitions[(name, version)]
    except KeyError:
        raise LookupError(f"saga definition {name} v{version} is not registered") from None


def latest_definition(name: str) -> SagaDefinition:
    return _latest[name]


def registered_definitions() -> list[SagaDefinition]:
    """Every registered definition version, e.g. for the console's filters (no query needed)."""
    return sorted(_definitions.values(), key=lambda d: (d.name, d.version))
