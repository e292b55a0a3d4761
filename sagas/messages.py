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
