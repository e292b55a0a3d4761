"""OpenTelemetry tracing: one trace per order, from the POST to the confirmation email.

The link across asynchronous hops is the W3C ``traceparent`` stored on every outbox message:
``publish()`` writes the current span's, and the consumer starts its span as a child of the
envelope's. So the trace follows the message, whichever path carried it (direct dispatch
after commit, the relay, local delivery, a replay of a dead letter days later), and not the
Celery task that happened to carry it.

Configuration comes from the environment, read once per process by :func:`configure_tracing`
(web: ``config.apps``' ready(); workers: also ``worker_process_init``, see config/celery.py):

* ``TRACING_ENABLED=false`` or ``OTEL_SDK_DISABLED=true``: no tracing at all (the API's no-op
  tracer; messages are published without a traceparent).
* ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``): spans are sent
  over OTLP/HTTP in batches; ``OTEL_TRACES_EXPORTER=console`` prints them instead.
* neither: spans get ids (so traceparents propagate and log lines carry trace ids) but are
  not recorded: with nowhere to send them, their attributes and events would be pure cost.
  Their traceparents say "not sampled", so set an exporter on the web and the workers alike.
  A span processor added later (a test's in-memory exporter) turns recording on.

Library instrumentations (psycopg, Redis, Celery) add a span per query, per Redis command and
per task publish/run: worth it when spans go somewhere, pure cost when they do not. They are
on when an exporter is configured, or when ``TRACING_INSTRUMENT_LIBRARIES=true``. Django's
instrumentation (one span per request, the root of an order's trace) is always on.
"""

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes

logger = logging.getLogger(__name__)

_PROPAGATOR = TraceContextTextMapPropagator()
tracer = trace.get_tracer("backoffice")
_configured_pid: int | None = None

AttributeValue = str | int | float | bool


def tracing_enabled() -> bool:
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return os.environ.get("TRACING_ENABLED", "true").strip().lower() not in ("false", "0", "no", "off")


def _exporter_name() -> str:
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return "otlp"
    if os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "console":
        return "console"
    return "none"


class RecordedWhenExported(Sampler):
    """The configured sampler once spans have somewhere to go; until then a span is not
    recorded, though it still gets its ids (and its parent's trace state)."""

    def __init__(self, delegate: Sampler) -> None:
        self.delegate = delegate
        self.exporting = False

    def should_sample(
        self,
        parent_context: otel_context.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: trace.TraceState | None = None,
    ) -> SamplingResult:
        if self.exporting:
            return self.delegate.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)
        parent = trace.get_current_span(parent_context).get_span_context()
        return SamplingResult(Decision.DROP, None, parent.trace_state if parent.is_valid else None)

    def get_description(self) -> str:
        return f"RecordedWhenExported{{{self.delegate.get_description()}}}"


class BackofficeTracerProvider(TracerProvider):
    """The SDK's provider, whose spans are recorded only once a span processor is added."""

    sampler: RecordedWhenExported

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)  # the sampler of OTEL_TRACES_SAMPLER, parent-based always-on by default
        self.sampler = RecordedWhenExported(self.sampler)

    def add_span_processor(self, span_processor: SpanProcessor) -> None:
        super().add_span_processor(span_processor)
        self.sampler.exporting = True


def configure_tracing() -> None:
    """Install the tracer provider and the instrumentations, once per process.

    Safe to call again (after a fork too): the SDK's batch processor restarts its export
    thread in a forked child by itself, and a provider can only be set once per process.
    """
    global _configured_pid
    if _configured_pid is not None or not tracing_enabled():
        return
    _configured_pid = os.getpid()

    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    os.environ.setdefault("OTEL_SERVICE_NAME", "backoffice")
    # The sampler comes from OTEL_TRACES_SAMPLER; by default parent-based, always on.
    provider = BackofficeTracerProvider(resource=Resource.create())
    exporter_name = _exporter_name()
    if exporter_name == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    elif exporter_name == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)
    _instrument(libraries=exporter_name != "none" or _env_true("TRACING_INSTRUMENT_LIBRARIES"))
    logger.debug("tracing configured", extra={"exporter": exporter_name})


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("true", "1", "yes", "on")


def _instrument(*, libraries: bool) -> None:
    from opentelemetry.instrumentation.django import DjangoInstrumentor

    # Probes and scrapes every few seconds would bury the traces that matter.
    os.environ.setdefault("OTEL_PYTHON_DJANGO_EXCLUDED_URLS", "healthz$,metrics$")
    DjangoInstrumentor().instrument()
    if not libraries:
        return
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    PsycopgInstrumentor().instrument()
    RedisInstrumentor().instrument()
    CeleryInstrumentor().instrument()


def current_traceparent() -> str:
    """The W3C traceparent of the current span; empty when there is none (tracing off)."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent", "")


def context_of(traceparent: str) -> otel_context.Context:
    """The context a traceparent names; an empty one (a new trace) when it is empty or invalid."""
    if not traceparent:
        return otel_context.Context()
    return _PROPAGATOR.extract({"traceparent": traceparent}, context=otel_context.Context())


def _clean(attributes: Mapping[str, Any]) -> dict[str, AttributeValue]:
    return {
        key: value if isinstance(value, AttributeValue) else str(value)
        for key, value in attributes.items()
        if value is not None and value != ""
    }


@contextmanager
def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
    traceparent: str | None = None,
) -> Iterator[Span]:
    """A span around a block, child of the current span, or of ``traceparent`` when given
    (a message's cause, whatever this process happens to be doing around it)."""
    parent = context_of(traceparent) if traceparent is not None else None
    with tracer.start_as_current_span(name, context=parent, kind=kind, attributes=_clean(attributes or {})) as current:
        yield current


def annotate_current_span(**values: Any) -> None:
    """Add ``backoffice.<name>`` attributes to the current span (a no-op without one)."""
    current = trace.get_current_span()
    if current.is_recording():
        current.set_attributes(_clean({f"backoffice.{name}": value for name, value in values.items()}))


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the current span in hex, for log lines; None without one."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    return format(span_context.trace_id, "032x"), format(span_context.span_id, "016x")
