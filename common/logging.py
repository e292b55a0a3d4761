"""Structured logging: one JSON line per event, carrying the ids of the work in progress.

The ids (request id, task id, message id, correlation and causation ids) live in a context
variable, so every log line written while serving a request or handling a message carries
them without each call site having to pass them along. The trace and span ids of the current
OpenTelemetry span (common.tracing) are added too, so a log line leads to its trace and back.
"""

import contextvars
import json
import logging
from datetime import UTC, datetime
from typing import Any

from common.tracing import current_ids

_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("log_context", default={})  # noqa: B039 - never mutated, only replaced

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def bind_context(**values: Any) -> contextvars.Token:
    """Add ids to the current context; returns a token for :func:`reset_context`."""
    merged = {**_context.get(), **{k: v for k, v in values.items() if v is not None}}
    return _context.set(merged)


def reset_context(token: contextvars.Token) -> None:
    _context.reset(token)


def clear_context() -> None:
    _context.set({})


def current_context() -> dict[str, Any]:
    return dict(_context.get())


def current_origin() -> str:
    """Who is at work, for a message that no other message caused: an operator's action, a
    periodic task (the sweeper), or a web request. Empty when none of them bound its ids."""
    context = _context.get()
    if context.get("operator"):
        return f"operator {context['operator']} ({context.get('operator_action', 'action')})"
    if context.get("task_name"):
        return f"task {context['task_name']}"
    if context.get("request_id"):
        return f"request {context['request_id']}"
    return ""


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        ids = current_ids()
        if ids is not None and not hasattr(record, "trace_id"):
            record.trace_id, record.span_id = ids
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)
