"""The analytics consumer: reads the event stream at its own pace and folds it into the read
model (analytics.services.fold), one batch per transaction.

``consume_live`` follows the active generation for as long as it runs (``python manage.py
analytics_consume``, one of the processes ``make run`` supervises); ``rebuild`` builds a new
generation from the first retained event and switches to it once it has caught up
(``python manage.py analytics_rebuild``), while the live one keeps serving and folding.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from django.conf import settings
from django.db import close_old_connections

from analytics.models import Generation
from analytics.services import (
    GenerationRetired,
    fold,
    generation_activate,
    generation_active_or_start,
    generation_record_tail,
    generation_start,
    generations_purge_retired,
)
from common.heartbeat import heartbeat_clear, heartbeat_write
from outbox.stream import EventStream, StreamRecord, StreamUnavailable, event_stream

logger = logging.getLogger(__name__)

ROLE = "analytics"


def _stream() -> EventStream:
    stream = event_stream()
    if stream is None:
        raise StreamUnavailable("no event stream is configured (EVENT_STREAM_URL is empty)")
    return stream


def _start_of(generation: Generation) -> str | int:
    return generation.next_offset if generation.next_offset else "first"


def consume_live(*, stop: Callable[[], bool], batch_size: int = 1000, max_wait: float = 0.1) -> None:
    """Fold the stream into the active generation until ``stop()`` says so. A rebuild that
    replaces the generation is noticed at the next batch, and the consumer carries on with the
    new one from its own position. A stream or database that fails is retried."""
    stream = _stream()
    name = f"{socket.gethostname()}-{os.getpid()}"
    while not stop():
        try:
            generation = generation_active_or_start(stream=stream.name)
            reader = stream.reader(start=_start_of(generation), prefetch=batch_size * 2)
        except Exception as exc:  # noqa: BLE001 - the stream or database is down: try again
            logger.warning("analytics consumer cannot start; retrying", extra={"error": str(exc)})
            time.sleep(1)
            continue
        tail_checked = 0.0
        try:
            for batch in reader.batches(max_batch=batch_size, max_wait=max_wait):
                if batch:
                    fold(generation.pk, batch)
                now = time.monotonic()
                if now - tail_checked >= settings.ANALYTICS_TAIL_INTERVAL_SECONDS:
                    heartbeat_write(role=ROLE, name=name)
                    # Idle means caught up: the last offset folded is the tail.
                    tail = stream.tail() if batch else None
                    if tail is None:
                        tail = Generation.objects.values_list("next_offset", flat=True).get(pk=generation.pk) - 1
                    generation_record_tail(generation.pk, tail)
                    tail_checked = now
                if stop():
                    break
        except GenerationRetired:
            logger.info("analytics generation replaced; following the new one")
        except Exception as exc:  # noqa: BLE001 - a lost connection: resume from the stored position
            logger.warning("analytics consumer interrupted; resuming", extra={"error": f"{type(exc).__name__}: {exc}"})
            close_old_connections()
            time.sleep(0.5)
        finally:
            reader.close()
    heartbeat_clear(role=ROLE, name=name)


@dataclass
class Progress:
    generation: int
    next_offset: int
    tail: int | None
    folded: int  # stream records read and folded (copies of an event included)
    seconds: float

    @property
    def events_per_second(self) -> float:
        return self.folded / self.seconds if self.seconds > 0 else 0.0

    @property
    def lag(self) -> int:
        return 0 if self.tail is None else max(0, self.tail + 1 - self.next_offset)


def read_ahead(
    stream: EventStream, *, start: str | int, batch_size: int, max_wait: float, idle: float, depth: int = 4
) -> Iterator[list[StreamRecord]]:
    """The stream's batches, read by a process of its own while the caller folds the ones before:
    decoding AMQP frames and folding are both Python, so a thread would only take turns with
    the fold; a forked reader decodes on the other core. The child opens its own connection and
    touches nothing else of this process (it ends with ``os._exit``); closing the generator
    stops it."""
    context = multiprocessing.get_context("fork")
    ready = context.Queue(maxsize=depth)

    def read() -> None:
        try:
            reader = stream.reader(start=start, prefetch=batch_size * 2)
            for batch in reader.batches(max_batch=batch_size, max_wait=max_wait, idle=idle):
                ready.put([(record.offset, record.body) for record in batch])
        except BaseException as exc:  # noqa: BLE001 - handed to the parent, raised there
            ready.put(f"{type(exc).__name__}: {exc}")
        finally:
            os._exit(0)

    child = context.Process(target=read, name="stream-read-ahead", daemon=True)
    child.start()
    try:
        while True:
            try:
                item = ready.get(timeout=max_wait + 30)
            except queue.Empty:
                raise StreamUnavailable("the stream reader stopped answering") from None
            if isinstance(item, str):
                raise StreamUnavailable(f"reading the stream failed: {item}")
            yield [StreamRecord(offset=offset, body=body) for offset, body in item]
    finally:
        child.terminate()
        child.join(timeout=10)
        ready.close()


def rebuild(
    *, batch_size: int = 2000, progress: Callable[[Progress], None] | None = None, purge: bool = True
) -> Progress:
    """Build a new generation from the first retained event; when it has reached the stream's
    tail, make it the active one (one transaction) and drop the retired one's rows."""
    stream = _stream()
    generation = generation_start(stream=stream.name)
    started = time.monotonic()
    folded = 0
    tail = stream.tail()
    batches = read_ahead(stream, start="first", batch_size=batch_size, max_wait=0.5, idle=0.2)
    try:
        next_offset = 0
        last_report = 0.0
        for batch in batches:
            if batch:
                fold(generation.pk, batch)
                folded += len(batch)
                next_offset = batch[-1].offset + 1
            now = time.monotonic()
            if progress is not None and (now - last_report > 0.2 or not batch):
                progress(Progress(generation.pk, next_offset, tail, folded, now - started))
                last_report = now
            if tail is None or next_offset > tail or not batch:
                tail = stream.tail()  # events keep coming: caught up means at the tail now
                if tail is None or next_offset > tail:
                    break
    finally:
        batches.close()
    generation_activate(generation.pk)
    if purge:
        generations_purge_retired()
    result = Progress(generation.pk, next_offset, tail, folded, time.monotonic() - started)
    if progress is not None:
        progress(result)
    return result
