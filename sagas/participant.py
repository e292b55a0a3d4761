"""Registering a context's handler for a saga command, replying to the orchestrator.

The handler's effect, its inbox row and the reply commit in one transaction. A business
failure commits the reply (and the inbox row) alone, so the orchestrator compensates at once:
a handler decides before it writes, and raises BusinessFailure only before its first write.
One that breaks the rule has its whole delivery rolled back and retried, never a partial
effect committed (this replaces a savepoint per command: two round trips).

A message that dead-letters after its retries tells the orchestrator too, as a technical
failure, so no saga waits for a reply that never comes.
"""

import re
from collections.abc import Callable
from typing import Any

from django.db import transaction

from outbox.consumer import register
from outbox.messages import Message, as_payload
from outbox.publishing import publish
from sagas.exceptions import BusinessFailure
from sagas.messages import ORCHESTRATOR, REPLY_TYPE, SagaReply, command_meta
from sagas.models import Outcome

CommandHandler = Callable[[Message, Any], dict[str, Any] | None]


def saga_participant(
    consumer: str,
    type: str,
    *,
    handle: CommandHandler,
    prepare: Callable[[Message], Any] | None = None,
) -> None:
    def handle_command(message: Message, prepared: Any) -> None:
        command_meta(message)  # a command without saga headers is a poison message
        watch = _WriteWatch()
        try:
            with transaction.get_connection().execute_wrapper(watch):
                data = handle(message, prepared) or {}
        except BusinessFailure as failure:
            if watch.wrote:
                raise HandlerWroteBeforeFailing(
                    f"{consumer}/{type} wrote before raising a business failure ({failure.reason}); "
                    "its writes cannot be kept beside a failure reply"
                ) from failure
            _reply(message, Outcome.BUSINESS_FAILURE, error=failure.reason)
            return
        _reply(message, Outcome.SUCCESS, data=data)

    def on_dead_letter(message: Message, reason: str) -> None:
        try:
            command_meta(message)
        except Exception:  # noqa: BLE001 - no saga to tell
            return
        _reply(message, Outcome.TECHNICAL_FAILURE, error=reason)

    register(consumer, type, handle=handle_command, prepare=prepare, on_dead_letter=on_dead_letter)


class HandlerWroteBeforeFailing(RuntimeError):
    """A saga command handler wrote, then raised BusinessFailure: a programming error."""


class _WriteWatch:
    """Notes whether any statement run through it may write."""

    def __init__(self) -> None:
        self.wrote = False

    def __call__(self, execute, sql, params, many, context):
        if not self.wrote and may_write(sql):
            self.wrote = True
        return execute(sql, params, many, context)


# The first keyword, after any leading comments.
_FIRST_KEYWORD = re.compile(r"\s*(?:(?:--[^\n]*(?:\n|$)|/\*.*?\*/)\s*)*([A-Za-z]*)", re.S)
_READS = {"SELECT", "SHOW", "EXPLAIN", "SAVEPOINT", "RELEASE", "ROLLBACK"}
_LOCKING_CLAUSE = re.compile(r"\bFOR\s+(?:NO\s+KEY\s+)?UPDATE\b", re.I)
_MODIFYING = re.compile(r"\b(?:INSERT|UPDATE|DELETE|MERGE)\b", re.I)


def may_write(sql: str) -> bool:
    """Whether a statement may change data: any statement but a plain read counts, and a WITH
    query counts when one of its parts modifies (a data-modifying CTE)."""
    keyword = _FIRST_KEYWORD.match(sql).group(1).upper()
    if keyword == "WITH":
        return bool(_MODIFYING.search(_LOCKING_CLAUSE.sub("", sql)))
    return keyword not in _READS


def _reply(message: Message, outcome: str, *, data: dict[str, Any] | None = None, error: str = "") -> None:
    meta = command_meta(message)
    publish(
        type=REPLY_TYPE,
        destination=ORCHESTRATOR,
        aggregate="saga",
        aggregate_id=meta.saga_id,
        correlation_id=meta.saga_id,
        payload=as_payload(
            SagaReply(
                saga_id=meta.saga_id,
                step=meta.step,
                phase=meta.phase,
                attempt=meta.attempt,
                outcome=outcome,
                data=data or {},
                error=error,
            )
        ),
    )
