"""The messages between the orchestrator and the participants of a saga."""

from dataclasses import dataclass, field
from typing import Any

from outbox.exceptions import PoisonMessage
from outbox.messages import Message

ORCHESTRATOR = "sagas"
REPLY_TYPE = "saga_reply"


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
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise PoisonMessage(f"a saga command needs saga headers: {exc}") from None
