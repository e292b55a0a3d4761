"""The orchestrator consumes step replies through the inbox like any other consumer."""

from outbox.consumer import register
from sagas.messages import ORCHESTRATOR, REPLY_TYPE, reply_span_attributes
from sagas.orchestrator import reply_apply

register(ORCHESTRATOR, REPLY_TYPE, handle=reply_apply, span_attributes=reply_span_attributes)
