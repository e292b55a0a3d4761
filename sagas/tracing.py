"""The saga engine's spans: one per step transition (a command sent, forward or compensating).

The command is published inside this span, so the participant's handler span is its child:
the trace reads "saga step charge_payment" → "handle charge_payment" → "gateway charge".
A command sent outside any span (the sweeper's resend, run by beat) continues the trace the
saga started in, so that the retry shows in the order's trace rather than in a trace of its own.
"""

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from common import tracing
from sagas.messages import aggregate_attribute
from sagas.models import Phase, SagaInstance

F = TypeVar("F", bound=Callable[..., Any])


def traced_step(send: F) -> F:
    """Wrap the orchestrator's command sender (``_send(saga, definition, *, new_step, delay)``)."""

    @functools.wraps(send)
    def wrapper(saga: SagaInstance, *args: Any, **kwargs: Any) -> Any:
        verb = "step" if saga.phase == Phase.FORWARD else "compensate"
        attributes = {
            "backoffice.saga_id": str(saga.id),
            "backoffice.step": saga.current_step,
            "backoffice.phase": saga.phase,
            "backoffice.attempt": saga.attempt + 1,
            "backoffice.retry": not kwargs.get("new_step", True),
            "backoffice.aggregate": f"{saga.aggregate}:{saga.aggregate_id}",
            **aggregate_attribute(saga.aggregate, saga.aggregate_id),
        }
        parent = saga.traceparent if tracing.current_ids() is None else None  # outside any span
        with tracing.span(f"saga {verb} {saga.current_step}", attributes=attributes, traceparent=parent):
            return send(saga, *args, **kwargs)

    return wrapper  # type: ignore[return-value]
