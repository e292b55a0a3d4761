"""Prometheus metrics: the metric objects, and one small function per thing worth counting.

Call sites say what happened (``saga_finished(state=...)``); this module decides names and
labels. Counters are incremented when the event is written, inside its transaction: a
transaction that then fails to commit is redelivered and counted again, so a counter may
over-count by the odd retry. The database stays the record (the saga page, the auditor);
these are for rates, dashboards and alerts.

Under gunicorn and Celery's prefork pool every process counts on its own. With
``PROMETHEUS_MULTIPROC_DIR`` set (before any process starts: the launcher and
config/gunicorn.py do it), prometheus_client keeps the values in files there, and /metrics
(console.metrics_endpoint) adds them up across processes.

Every label comes from a closed set, whoever sent the request or the message: each series
costs memory in every process and a file in multiprocess mode, so a value a client or a broker
writer can choose (an HTTP method, a queue name) is mapped to ``other`` unless it is known.

Levels that the database already knows (the outbox backlog and its age, open violations,
stuck sagas, dead letters) are not kept here but read at scrape time, see
console.metrics_endpoint.DatabaseCollector: always exact, whatever process changed them.
"""

import functools
from datetime import datetime

from django.conf import settings
from django.utils import timezone
from prometheus_client import Counter, Histogram

PREFIX = "backoffice"
OTHER = "other"
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"})

SAGAS_STARTED = Counter(f"{PREFIX}_sagas_started", "Sagas started.", ["definition"])
SAGAS_FINISHED = Counter(
    f"{PREFIX}_sagas_finished",
    "Sagas that reached a final state: completed, compensated or failed (compensation failed).",
    ["definition", "state"],
)
SAGAS_STUCK = Counter(f"{PREFIX}_sagas_stuck", "Sagas flagged stuck for an operator, by step.", ["step"])
SAGA_STEP_SECONDS = Histogram(
    f"{PREFIX}_saga_step_duration_seconds",
    "From a step's first command to the reply that completed it (retries included).",
    ["step", "phase", "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
MESSAGES = Counter(
    f"{PREFIX}_messages_delivered",
    "Deliveries of outbox messages to their consumer, by outcome: handled, duplicate (absorbed "
    "by the inbox), retry (a transient failure, delivered again later) or dead_letter.",
    ["consumer", "type", "outcome"],
)
DUPLICATES = Counter(f"{PREFIX}_duplicates_absorbed", "Duplicate deliveries absorbed by the inbox.", ["consumer"])
API_REQUESTS = Counter(f"{PREFIX}_api_requests", "Storefront API requests, by status.", ["method", "route", "status"])
IDEMPOTENCY = Counter(
    f"{PREFIX}_idempotency_keys",
    "Idempotency-Key outcomes other than a first request: replayed (the stored response given "
    "again), in_use (409) and reused (422, the same key for another request).",
    ["outcome"],
)
AUDIT_VIOLATIONS = Counter(
    f"{PREFIX}_audit_violations_opened",
    "Violations the consistency auditor found (new or back again), by kind.",
    ["kind"],
)


def saga_started(*, definition: str) -> None:
    SAGAS_STARTED.labels(definition).inc()


def saga_finished(*, definition: str, state: str) -> None:
    SAGAS_FINISHED.labels(definition, state).inc()


def saga_stuck(*, step: str) -> None:
    SAGAS_STUCK.labels(step).inc()


def saga_step_done(*, step: str, phase: str, outcome: str, started_at: datetime | None) -> None:
    if started_at is not None:
        seconds = max(0.0, (timezone.now() - started_at).total_seconds())
        SAGA_STEP_SECONDS.labels(step, phase, outcome).observe(seconds)


def message_delivered(*, consumer: str, type: str, outcome: str) -> None:
    """``consumer`` is a queue of ours (a poison message is counted under the queue it came
    from, which its sender may name); ``type`` a registered type or a class in parentheses."""
    consumer = consumer if consumer in _queues() else OTHER
    MESSAGES.labels(consumer, type, outcome).inc()
    if outcome == "duplicate":
        DUPLICATES.labels(consumer).inc()


def api_request(*, method: str, route: str, status: int) -> None:
    """``route`` is a URL pattern of ours (or "(unmatched)"), never the path."""
    API_REQUESTS.labels(
        method if method in HTTP_METHODS else OTHER, route, str(status) if 100 <= status <= 599 else OTHER
    ).inc()


def idempotency_outcome(outcome: str) -> None:
    IDEMPOTENCY.labels(outcome).inc()


def audit_violation_opened(*, kind: str) -> None:
    AUDIT_VIOLATIONS.labels(kind).inc()


@functools.cache
def _queues() -> frozenset[str]:
    return frozenset(queue.name for queue in settings.CELERY_TASK_QUEUES)
