"""The idempotency key of a saga step: the one place its format is written.

Keys are derived, never random: the saga id and the step name give the step's key, the same on
every attempt and every copy, and a compensation's key is its step's plus a suffix.
"""

import uuid
from dataclasses import dataclass

_COMPENSATION_SUFFIX = ":compensate"


def step_key(saga_id: object, step: str, *, compensation: bool = False) -> str:
    """The key of a step (``compensation``: of its compensation)."""
    key = f"{saga_id}:{step}"
    return f"{key}{_COMPENSATION_SUFFIX}" if compensation else key


@dataclass(frozen=True)
class StepKeyParts:
    saga_id: uuid.UUID
    step: str
    compensation: bool


def parse_step_key(key: str) -> StepKeyParts | None:
    """The saga and step a key was derived from, or None for a key made outside a saga (e.g.
    for rows written before the step columns existed). Anything after the step and its
    compensation suffix (a late charge's ``:late:<charge>``) is the caller's own."""
    saga_id, _, rest = key.partition(":")
    try:
        parsed = uuid.UUID(saga_id)
    except ValueError:
        return None
    if str(parsed) != saga_id or not rest:
        return None
    step = rest.split(":", 1)[0]
    return StepKeyParts(parsed, step, rest.startswith(f"{step}{_COMPENSATION_SUFFIX}"))
