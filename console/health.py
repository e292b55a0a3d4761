"""``GET /healthz``: is every dependency the system needs answering?

The answer is computed at most once per HEALTH_CACHE_SECONDS in each web process and served
from memory in between: a load balancer, a monitor and anyone on the internet may poll it, and
the web must not spend its workers waiting on checks (a worker ping used to hold each call for a
full second). Whether a Celery worker is alive comes from the heartbeats the workers write
(common.heartbeat), not from a ping.

Anonymous callers learn only ``ok`` or ``failing`` per dependency; what failed and why (hosts,
errors, worker names, violations by kind) goes to the log and to staff users or callers with
the metrics token.
"""

import hmac
import json
import logging
import threading
import time

from celery import current_app as celery_app
from django.conf import settings
from django.db import close_old_connections, connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from redis import Redis
from redis.exceptions import RedisError

from analytics.selectors import consumer_lag
from audit.selectors import violation_counts
from common.heartbeat import WORKER, liveness
from outbox.stream import event_stream

logger = logging.getLogger(__name__)


def _check_database() -> dict:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {"ok": True}


def _check_redis() -> dict:
    client = Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.ping()
    finally:
        client.close()
    return {"ok": True}


def _check_workers() -> dict:
    alive = liveness()
    if alive.error:
        return {"ok": False, "error": alive.error}
    workers = sorted(beat.name for beat in alive.processes.get(WORKER, []))
    if not workers:
        return {"ok": False, "error": f"no Celery worker heartbeat in the last {settings.HEARTBEAT_TTL_SECONDS} s"}
    return {"ok": True, "workers": workers}


def _check_event_stream() -> dict:
    """The stream integration events go to, and how far its analytics consumer is behind."""
    stream = event_stream()
    if stream is None:
        return {"ok": True, "stream": None, "detail": "no event stream configured (EVENT_STREAM_URL)"}
    stream.ping()
    result: dict = {"ok": True, "stream": stream.name}
    lag = consumer_lag()
    if lag is not None:
        result.update(consumer_lag_events=lag.events, consumer_lag_seconds=round(lag.seconds, 3))
    return result


def _check_broker() -> dict:
    """A broker that is not Redis (RabbitMQ): a passive declare of the default queue over one of
    the app's pooled connections, which proves the connection live and the queues declared."""
    with celery_app.pool.acquire(block=True, timeout=1) as pooled:
        try:
            pooled.ensure_connection(max_retries=0)  # one attempt: the web's time is the caller's
            pooled.default_channel.queue_declare(settings.CELERY_TASK_DEFAULT_QUEUE, passive=True)
        except Exception:
            pooled.collect()  # a broken connection is not given back to the pool as it is
            raise
    return {"ok": True}


CHECKS = {
    "database": _check_database,
    "redis": _check_redis,
    "celery_workers": _check_workers,
    "event_stream": _check_event_stream,
}
if settings.BROKER_IS_RABBITMQ:
    CHECKS["broker"] = _check_broker

_lock = threading.Lock()
_cached: tuple[float, dict, int] | None = None


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    body, status = _answer()
    if not _may_see_details(request):
        body = anonymous_body(body)
    return JsonResponse(body, status=status)


def _answer() -> tuple[dict, int]:
    """The last answer while it is fresh, else a new one (one caller computes it at a time)."""
    global _cached
    ttl = settings.HEALTH_CACHE_SECONDS
    cached = _cached
    if cached is not None and time.monotonic() - cached[0] < ttl:
        return cached[1], cached[2]
    with _lock:
        cached = _cached
        if cached is not None and time.monotonic() - cached[0] < ttl:
            return cached[1], cached[2]
        body, status = _compute()
        _cached = (time.monotonic(), body, status)
    return body, status


def _compute() -> tuple[dict, int]:
    results: dict[str, dict] = {}
    for name, check in CHECKS.items():
        if name == "celery_workers" and not results.get("redis", {"ok": True})["ok"]:
            results[name] = {"ok": False, "error": "the broker (Redis) is unreachable"}
            continue
        try:
            results[name] = check()
        except (Exception, RedisError) as exc:  # noqa: BLE001 - a health check reports, never raises
            results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    failing = [name for name, result in results.items() if not result["ok"]]
    if failing:
        logger.warning(
            "health check failing", extra={"failing": {name: results[name].get("error", "") for name in failing}}
        )
    body = {"status": "ok" if not failing else "unavailable", "checks": results, "failing": failing}
    body.update(_extra_details())
    return body, 200 if not failing else 503


def _may_see_details(request: HttpRequest) -> bool:
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_staff:
        return True
    token = settings.METRICS_TOKEN
    given = request.headers.get("Authorization", "").encode()
    return bool(token) and hmac.compare_digest(given, f"Bearer {token}".encode())


def anonymous_body(body: dict) -> dict:
    """What a caller without credentials learns: ok or failing per dependency."""
    return {
        "status": body["status"],
        "checks": {name: {"ok": result["ok"]} for name, result in body["checks"].items()},
        "failing": body["failing"],
        "violations": {"open": body["violations"].get("open")},
    }


class AnswerAnonymousHealthFirst:
    """A WSGI wrapper that answers an anonymous ``GET /healthz`` from the cached answer before
    Django's middleware runs: pollers (a monitor, a load balancer, anyone) cost the web a few
    tens of microseconds each, not a pass through the whole stack, so they cannot crowd out the
    API. A request with credentials (a session cookie, an Authorization header) goes to the
    view, which shows details to staff."""

    def __init__(self, application) -> None:
        self.application = application

    def __call__(self, environ, start_response):
        if (
            environ.get("PATH_INFO") != "/healthz"
            or environ.get("REQUEST_METHOD") != "GET"
            or "HTTP_AUTHORIZATION" in environ
            or "HTTP_COOKIE" in environ
        ):
            return self.application(environ, start_response)

        close_old_connections()  # outside Django's request cycle: a refresh may use the database
        body, status = _answer()
        payload = json.dumps(anonymous_body(body)).encode()
        start_response(
            "200 OK" if status == 200 else "503 Service Unavailable",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(payload))),
                ("Cache-Control", "no-cache, no-store, must-revalidate, private, max-age=0"),
                ("X-Content-Type-Options", "nosniff"),
            ],
        )
        return [payload]


def health_cache_clear() -> None:
    """Forget the cached answer (tests, and a process that just changed what it checks)."""
    global _cached
    _cached = None


def _extra_details() -> dict:
    """Details other apps add to the health answer: open consistency violations, by kind.

    Reported, never a reason for a 503: health is about the dependencies answering, and a
    violation is for an operator. Whatever goes wrong reading them is reported the same way,
    so that the health answer itself never fails because of the auditor.
    """
    try:
        by_kind = violation_counts()
    except Exception as exc:  # noqa: BLE001 - a health check reports, never raises
        return {"violations": {"error": f"{type(exc).__name__}: {exc}"}}
    return {"violations": {"open": sum(by_kind.values()), "by_kind": by_kind}}
