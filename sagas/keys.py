"""The idempotency key of a saga step: the one place its format is written.

Keys are derived, never random: the saga id and the step name give the step's key, the same on
every attempt and every copy, and a compensation's key is its step's plus a suffix.
"""

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass

_COMPENSATION_SUFFIX = ":compensate"


def step_key(saga_id: object, step: str, *, compensation: bool = False) -> str:
    """The key of a step (``compensation``: of its compensation)."""
    key = f"{saga_id}:{step}"
    return f"{key}{_COMPENSATION_SUFFIX}" if compensation else key


def saga_keys_prefix(saga_id: object) -> str:
    """How every step key of a saga begins (and every key derived from one)."""
    return step_key(saga_id, "")


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


# The same keys in SQL, for the auditor, which matches the providers' books (they know our
# rows only by the key we gave them) against the sagas. ``derive`` is how a key is made from a
# saga id: e.g. ``lambda saga: provider_key(step_key(saga, "charge_payment"))``. Keys are
# concatenations, so ``derive`` is run on a slot and the slot becomes the column: the format
# is still written only above.
_SLOT = "\x1f"
_STEP_SLOT = "\x1e"
_UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_UUID_LENGTH = 36


def _around_slot(derive: Callable[[str], str]) -> tuple[str, str]:
    before, after = derive(_SLOT).split(_SLOT)
    return before, after


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def key_sql(derive: Callable[[str], str], value_sql: str) -> str:
    """An SQL expression of the key ``derive`` makes from ``value_sql`` (a saga id, or the
    step key a provider's key is derived from)."""
    before, after = _around_slot(derive)
    parts = [_literal(before)] if before else []
    parts.append(f"{value_sql}::text")
    if after:
        parts.append(_literal(after))
    return "(" + " || ".join(parts) + ")"


def step_key_sql(saga_id_sql: str, step_sql: str, *, compensation: bool = False) -> str:
    """An SQL expression of the key of the step named by ``step_sql`` of the saga ``saga_id_sql``
    (e.g. for rows seeded in bulk)."""
    values = {_SLOT: f"{saga_id_sql}::text", _STEP_SLOT: step_sql}
    parts = re.split(f"({_SLOT}|{_STEP_SLOT})", step_key(_SLOT, _STEP_SLOT, compensation=compensation))
    return "(" + " || ".join(values.get(part, _literal(part)) for part in parts if part) + ")"


def key_pattern(derive: Callable[[str], str], *, exact: bool) -> str:
    """A regular expression of the keys ``derive`` makes from any saga id (``exact``: and
    nothing after them)."""
    before, after = _around_slot(derive)
    return f"^{re.escape(before)}{_UUID}{re.escape(after)}" + ("$" if exact else "")


def saga_id_in_key_sql(derive: Callable[[str], str], key_column: str, *, exact: bool = False) -> str:
    """An SQL expression of the saga id in a key ``derive`` made (NULL for any other key)."""
    pattern = key_pattern(derive, exact=exact)
    return (
        f"(CASE WHEN {key_column} ~ {_literal(pattern)} THEN {saga_id_text_in_key_sql(derive, key_column)}::uuid END)"
    )


def saga_id_text_in_key_sql(derive: Callable[[str], str], key_column: str) -> str:
    """An SQL expression of the text where a key ``derive`` made holds its saga id, unchecked:
    for a join on the saga id's text, which hashes, over keys already known to be such."""
    before, _ = _around_slot(derive)
    return f"substring({key_column} FROM {len(before) + 1} FOR {_UUID_LENGTH})"


def key_prefix_sql(derive: Callable[[str], str], key_column: str) -> str:
    """An SQL condition that a key starts as ``derive``'s keys do, before the saga id (a
    fixed-prefix LIKE, which PostgreSQL estimates from the column's statistics)."""
    before, _ = _around_slot(derive)
    escaped = before.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_").replace("'", "''")
    return f"{key_column} LIKE '{escaped}%%'"
