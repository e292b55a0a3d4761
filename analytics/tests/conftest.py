"""Fixtures of the analytics tests: the real RabbitMQ stream, emptied for each test, and the
consumer as a real process."""

from collections.abc import Iterator

import pytest

from analytics.models import Generation
from conftest import ARTIFACTS
from devtools.processes import AnalyticsConsumerProcess, wait_for
from outbox.stream import RabbitMQStream, event_stream


@pytest.fixture
def stream() -> RabbitMQStream:
    """The configured stream, deleted and declared again: it holds this test's events only.
    Every process of the test session publishes to it by name, so they all follow."""
    stream = event_stream()
    assert stream is not None, "the tests need EVENT_STREAM_URL (the local RabbitMQ)"
    stream.delete()
    stream.declare()
    return stream


@pytest.fixture
def analytics_consumer(worker_env) -> Iterator[AnalyticsConsumerProcess]:
    ARTIFACTS.mkdir(exist_ok=True)
    consumer = AnalyticsConsumerProcess(worker_env, ARTIFACTS / "test-analytics.log", batch_size=50)
    yield consumer
    if consumer.process is not None:
        consumer.stop()


def caught_up(stream: RabbitMQStream) -> bool:
    """The active generation has folded everything on the stream."""
    generation = Generation.objects.filter(status=Generation.Status.ACTIVE).first()
    tail = stream.tail()
    return generation is not None and tail is not None and generation.next_offset > tail


def wait_caught_up(stream: RabbitMQStream, timeout: float = 60) -> None:
    wait_for(lambda: caught_up(stream), timeout=timeout, message="the analytics consumer did not catch up")
