"""The messages between the orchestrator and the participants of a saga."""

from dataclasses import dataclass, field
from typing import Any

from outbox.exceptions import PoisonMessage
from outbox.messages import Channel, Message

ORCHESTRATOR = "sagas"
REPLY_TYPE = "saga_reply"
# Every participant's reply goes to the orchestrator; a context's reply contracts name it.
SAGA_REPLY = Channel(ORCHESTRATOR, REPLY_TYPE)
# In a failure reply's data: the books refused an operator's record by hand (e.g. no evidence
# they can act on). The step itself did not fail: the saga goes back to the operator.
BY_HAND_REFUSED = "by_hand_refused"


@dataclass(frozen=True)
class SagaReply:
    """A participant's answer to one attempt of one step. Replies carry the saga id, step,
    phase and attempt so the orchestrator can tell a stale or reordered reply from the one it
    waits for."""

    saga_id: str
    step: str
    phase: str
    attempt: int
    outcome: str
    data: dict[str, Any] = field(default_factory=dict)
    error: str = ""


@dataclass(frozen=True)
class CommandMeta:
    saga_id: str
    step: str
    phase: str
    attempt: int
    idempotency_key: str
    # A compensation names the key of the step it undoes, so that it can fence that step.
    compensates: str = ""
    # Set on the copy an operator's "done by hand" sends: who, why, and the evidence.
    manual: dict[str, Any] | None = None


def command_meta(message: Message) -> CommandMeta:
    """The saga routing data a command carries in its headers."""
    headers = message.headers
    try:
        return CommandMeta(
            saga_id=str(headers["saga_id"]),
            step=str(headers["step"]),
            phase=str(headers["phase"]),
            attempt=int(headers["attempt"]),
            idempotency_key=str(headers["idempotency_key"]),
            compensates=str(headers.get("compensates") or ""),
            manual=_manual(headers.get("manual")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise PoisonMessage(f"a saga command needs saga headers: {exc}") from None


def _manual(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TypeError("the manual header is not an object")
    return value


def aggregate_attribute(aggregate: str, aggregate_id: object) -> dict[str, Any]:
    """``backoffice.order_id`` for an order's saga (an int where the id is one), named from
    the saga's aggregate: the engine knows no aggregate by name."""
    if not aggregate or not aggregate.isidentifier():
        return {}
    value = str(aggregate_id)
    return {f"backoffice.{aggregate}_id": int(value) if value.isdigit() else value}


def command_span_attributes(message: Message) -> dict[str, Any]:
    """What a saga command is about, on its handler's span: the saga, step, phase, attempt
    and the saga's aggregate, all from the command's headers."""
    headers = message.headers
    return {
        "backoffice.saga_id": headers.get("saga_id"),
        "backoffice.step": headers.get("step"),
        "backoffice.phase": headers.get("phase"),
        "backoffice.attempt": headers.get("attempt"),
        **aggregate_attribute(headers.get("aggregate", ""), headers.get("aggregate_id", "")),
    }


def reply_span_attributes(message: Message) -> dict[str, Any]:
    """What a step's reply is about, on the orchestrator's span: replies carry the saga's ids
    in their payload."""
    payload = message.payload if isinstance(message.payload, dict) else {}
    return {
        "backoffice.saga_id": payload.get("saga_id"),
        "backoffice.step": payload.get("step"),
        "backoffice.phase": payload.get("phase"),
        "backoffice.attempt": payload.get("attempt"),
    }


@dataclass(frozen=True)
class StepAddress:
    """Which attempt of which saga step a message is about: a command says it in its headers,
    a participant's reply in its payload."""

    saga_id: str
    step: str
    phase: str
    attempt: int


def step_address_of(envelope: Any) -> StepAddress | None:
    """The saga step a stored envelope (e.g. a dead letter's) belongs to, or None for a
    message that is no saga's command or reply, or too malformed to tell."""
    if not isinstance(envelope, dict):
        return None
    headers = envelope.get("headers")
    payload = envelope.get("payload")
    if envelope.get("type") == REPLY_TYPE and isinstance(payload, dict):
        source = payload
    elif isinstance(headers, dict) and "saga_id" in headers:
        source = headers
    else:
        return None
    try:
        return StepAddress(
            saga_id=str(source["saga_id"]),
            step=str(source["step"]),
            phase=str(source["phase"]),
            attempt=int(source["attempt"]),
        )
    except (KeyError, TypeError, ValueError):
        return None
