"""The relay's own writer of task messages puts on Redis what Celery's producer would."""

import base64
import json
import uuid

from config.celery import app
from outbox import signing, tasks
from outbox.broker import _redis_broker, _send_through_celery, task_document

# A queue no worker consumes, so that the messages stay where the test reads them.
QUEUE = "broker-format-check"


def _envelope() -> dict:
    return {
        "message_id": str(uuid.uuid4()),
        "type": "ping",
        "destination": QUEUE,
        "aggregate": "test",
        "aggregate_id": "1",
        "correlation_id": "c",
        "causation_id": "",
        "traceparent": "",
        "created_at": "2026-01-01T00:00:00+00:00",
        "payload": {"amount": 1200, "note": "né"},
        "headers": {"saga_id": "s"},
    }


def test_task_document_matches_what_celery_writes():
    redis, prefix = _redis_broker()
    redis.delete(prefix + QUEUE)
    envelope = _envelope()
    try:
        _send_through_celery([envelope])
        (raw,) = redis.lrange(prefix + QUEUE, 0, -1)
    finally:
        redis.delete(prefix + QUEUE)
    celery = json.loads(raw)
    task = app.tasks[tasks.consume.name]  # registered, as in every process that relays
    ours = task_document(
        envelope,
        queue=QUEUE,
        origin=celery["headers"]["origin"],
        reply_to=celery["properties"]["reply_to"],
        time_limits=[task.time_limit, task.soft_time_limit],
    )
    assert celery["headers"]["timelimit"] == [90, 60]  # the configured limits reach the worker

    # The transport's acknowledgement handle is random per copy; everything else is equal. The
    # body is the same JSON, spelt compactly by ours: the signed envelope's canonical text.
    assert uuid.UUID(ours["properties"].pop("delivery_tag"))
    celery["properties"].pop("delivery_tag")
    body, celery_body = (json.loads(base64.b64decode(document.pop("body"))) for document in (ours, celery))
    assert body == celery_body
    assert body[0][0] == {**envelope, "signature": body[0][0]["signature"]}
    assert signing.is_authentic(body[0][0])
    assert ours == celery
