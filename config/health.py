"""``GET /healthz``: is every dependency the system needs answering?"""

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from redis import Redis
from redis.exceptions import RedisError

from config.celery import app as celery_app


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
    replies = celery_app.control.ping(timeout=1.0) or []
    workers = sorted(name for reply in replies for name in reply)
    if not workers:
        return {"ok": False, "error": "no Celery worker answered a ping within 1 s"}
    return {"ok": True, "workers": workers}


CHECKS = {"database": _check_database, "redis": _check_redis, "celery_workers": _check_workers}


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    results: dict[str, dict] = {}
    for name, check in CHECKS.items():
        if name == "celery_workers" and not results["redis"]["ok"]:
            results[name] = {"ok": False, "error": "the broker (Redis) is unreachable"}
            continue
        try:
            results[name] = check()
        except (Exception, RedisError) as exc:  # noqa: BLE001 - a health check reports, never raises
            results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    details = _extra_details()
    failing = [name for name, result in results.items() if not result["ok"]]
    body = {"status": "ok" if not failing else "unavailable", "checks": results, "failing": failing}
    body.update(details)
    return JsonResponse(body, status=200 if not failing else 503)


def _extra_details() -> dict:
    """Details other apps add to the health answer: open consistency violations, by kind.

    Reported, never a reason for a 503: health is about the dependencies answering, and a
    violation is for an operator. Whatever goes wrong reading them is reported the same way,
    so that the health answer itself never fails because of the auditor.
    """
    try:
        from audit.selectors import violation_counts

        by_kind = violation_counts()
    except Exception as exc:  # noqa: BLE001 - a health check reports, never raises
        return {"violations": {"error": f"{type(exc).__name__}: {exc}"}}
    return {"violations": {"open": sum(by_kind.values()), "by_kind": by_kind}}
