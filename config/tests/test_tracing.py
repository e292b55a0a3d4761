"""Tracing: one order is one trace, from the API request through every message to the email,
linked parent to child across the outbox; log lines carry the trace and span ids.

The saga runs in this process (testing/pump.py delivers each message through the same
consumer wrapper a worker uses), with an in-memory exporter added to the process' provider.
"""

import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from common import tracing
from common.logging import ContextFilter, JsonFormatter
from orders.models import Order
from outbox.models import OutboxMessage
from outbox.stream import STREAM_DESTINATION
from testing.pump import pump
from testing.storefront import make_api_client, place_order, stock_catalog

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        pytest.skip("tracing is turned off in this environment (TRACING_ENABLED / OTEL_SDK_DISABLED)")
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    yield memory
    memory.shutdown()  # the processor stays on the provider; a stopped exporter keeps nothing


@pytest.fixture
def spans(exporter: InMemorySpanExporter) -> InMemorySpanExporter:
    exporter.clear()
    return exporter


def _parent_of(traceparent: str) -> tuple[int, int]:
    _version, trace_id, span_id, _flags = traceparent.split("-")
    return int(trace_id, 16), int(span_id, 16)


def _one(found: list[ReadableSpan], what: str) -> ReadableSpan:
    assert len(found) == 1, f"{what}: {[s.name for s in found]}"
    return found[0]


def test_one_order_is_one_trace_from_the_api_request_to_the_email(spans):
    stock_catalog()
    response = place_order(make_api_client("shop-trace"))
    assert response.status_code == 202
    pump()
    order = Order.objects.get()
    assert order.status == Order.Status.CONFIRMED

    finished = spans.get_finished_spans()
    request = _one(
        [s for s in finished if s.kind == SpanKind.SERVER and s.attributes.get("http.method") == "POST"], "request"
    )
    trace_id = request.context.trace_id
    assert request.parent is None
    assert request.attributes["backoffice.order_id"] == order.pk  # from an order id to its trace
    assert request.attributes["backoffice.saga_id"] == str(order.saga_id)
    by_id = {s.context.span_id: s for s in finished if s.context.trace_id == trace_id}
    assert len(by_id) == len([s for s in finished if s.context.trace_id == trace_id])

    # Every message of the saga names the span that published it, and its handler's span is
    # that span's child: the link that crosses the outbox and the broker.
    messages = list(OutboxMessage.objects.filter(correlation_id=str(order.saga_id)).order_by("id"))
    assert len(messages) >= 8 + 5  # four commands and four replies, five integration events
    for message in messages:
        published_in_trace, published_by = _parent_of(message.traceparent)
        assert published_in_trace == trace_id, message
        assert published_by in by_id, f"{message.type}: its publishing span is not in the trace"
        if message.destination == STREAM_DESTINATION:
            continue  # an event's consumers are outside: they continue the trace from its traceparent
        handler = _one(
            [s for s in finished if s.attributes.get("messaging.message.id") == str(message.message_id)],
            f"handler of {message.type}",
        )
        assert handler.name == f"handle {message.type}"
        assert handler.kind == SpanKind.CONSUMER
        assert handler.context.trace_id == trace_id
        assert handler.parent.span_id == published_by
        assert handler.attributes["backoffice.saga_id"] == str(order.saga_id)
        assert handler.attributes["backoffice.step"]
        assert handler.attributes["backoffice.attempt"] == 1

    names = {s.name for s in by_id.values()}
    for expected in (
        "saga step charge_payment",
        "handle charge_payment",
        "gateway charge",
        "saga step reserve_stock",
        "handle reserve_stock",
        "saga step create_shipment",
        "handle create_shipment",
        "carrier create_shipment",
        "saga step confirm_order",
        "handle confirm_order",
        "email confirmation",
    ):
        assert expected in names, f"{expected} missing from {sorted(names)}"

    # The email's ancestry leads, span by span, back to the API request.
    email = _one([s for s in by_id.values() if s.name == "email confirmation"], "email")
    assert email.attributes["backoffice.order_id"] == order.pk
    chain, current = [], email
    while current.parent is not None:
        current = by_id[current.parent.span_id]
        chain.append(current.name)
    assert current is request
    assert chain[:2] == ["handle confirm_order", "saga step confirm_order"]
    first_command = _one([s for s in by_id.values() if s.name == "saga step charge_payment"], "first step")
    assert first_command.parent.span_id == request.context.span_id
    assert first_command.attributes["backoffice.order_id"] == order.pk


def test_log_lines_carry_the_trace_and_span_ids_of_the_current_span(spans):
    record = logging.LogRecord("test", logging.INFO, __file__, 1, "inside", (), None)
    with tracing.span("work") as current:
        ContextFilter().filter(record)
    line = json.loads(JsonFormatter().format(record))
    assert line["trace_id"] == format(current.get_span_context().trace_id, "032x")
    assert line["span_id"] == format(current.get_span_context().span_id, "016x")

    outside = logging.LogRecord("test", logging.INFO, __file__, 1, "outside", (), None)
    ContextFilter().filter(outside)
    assert "trace_id" not in json.loads(JsonFormatter().format(outside))


def test_published_messages_default_to_the_current_span_and_a_handler_restores_it(spans):
    from django.db import transaction

    from outbox.publishing import publish

    with tracing.span("caller") as caller, transaction.atomic():
        message = publish(type="t", destination="nowhere", payload={}, aggregate="x", aggregate_id=1)
    context = caller.get_span_context()
    assert message.traceparent.startswith(f"00-{context.trace_id:032x}-{context.span_id:016x}-")
    with tracing.span("handler", traceparent=message.traceparent) as handler:
        assert tracing.current_traceparent().split("-")[1] == f"{context.trace_id:032x}"
    assert handler.parent.span_id == context.span_id


def test_a_command_the_sweeper_resends_continues_the_trace_the_saga_started_in(spans):
    from datetime import timedelta

    from django.utils import timezone

    from sagas.models import SagaInstance
    from sagas.orchestrator import saga_sweep

    stock_catalog()
    response = place_order(make_api_client("shop-resend"))
    assert response.status_code == 202
    saga = SagaInstance.objects.get(pk=Order.objects.get().saga_id)
    started_in = int(saga.traceparent.split("-")[1], 16)
    first = OutboxMessage.objects.exclude(destination=STREAM_DESTINATION).get(correlation_id=str(saga.pk))
    assert int(first.traceparent.split("-")[1], 16) == started_in
    OutboxMessage.objects.update(published_at=timezone.now())  # the command was lost by the broker
    SagaInstance.objects.filter(pk=saga.pk).update(last_sent_at=timezone.now() - timedelta(minutes=10))

    assert saga_sweep()["resent"] == 1  # as beat runs it: outside any span

    resent = OutboxMessage.objects.filter(correlation_id=str(saga.pk), type=first.type).exclude(pk=first.pk).get()
    assert int(resent.traceparent.split("-")[1], 16) == started_in
    resends = [s for s in spans.get_finished_spans() if s.attributes.get("backoffice.retry")]
    step = _one(resends, "the resend's span")
    assert step.name == "saga step charge_payment" and step.context.trace_id == started_in


def test_spans_are_recorded_only_once_they_have_somewhere_to_go():
    provider = tracing.BackofficeTracerProvider(shutdown_on_exit=False)
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("request") as unrecorded:
        assert not unrecorded.is_recording()
        traceparent = tracing.current_traceparent()
        with tracer.start_as_current_span("step") as child:
            pass
    # Not recorded, yet it has its ids: its children, its messages and its log lines carry them.
    context = unrecorded.get_span_context()
    assert context.is_valid
    assert traceparent.startswith(f"00-{context.trace_id:032x}-{context.span_id:016x}-")
    assert not int(traceparent.rsplit("-", 1)[1], 16) & 0x01  # flagged "not sampled"
    assert child.get_span_context().trace_id == context.trace_id

    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with tracer.start_as_current_span("request") as recorded:
        assert recorded.is_recording()
        with tracer.start_as_current_span("step"):
            pass
    assert [span.name for span in memory.get_finished_spans()] == ["step", "request"]
    # The configured sampler decides again: by default parent-based, so a message published
    # while nothing was recorded stays unrecorded downstream, as its traceparent says.
    with tracer.start_as_current_span("handler", context=tracing.context_of(traceparent)) as handler:
        assert not handler.is_recording()
    assert handler.get_span_context().trace_id == context.trace_id
    provider.shutdown()
