"""The running system: health answers, and a real worker process doing real work."""

import json
import os
import uuid
from pathlib import Path

import pytest
from django.db import transaction

from conftest import wait_for
from outbox.models import InboxMessage
from outbox.publishing import publish


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_process_handles_a_task_and_its_effect_lands_in_postgresql(live_system):
    with transaction.atomic():
        message = publish(type="ping", destination="default", payload={}, aggregate="test", aggregate_id=uuid.uuid4())
    wait_for(lambda: InboxMessage.objects.filter(message_id=message.message_id).exists(), timeout=20)
    assert live_system.process.pid not in (None, 0)


@pytest.mark.django_db(transaction=True)
def test_the_worker_and_its_pool_run_below_the_webs_cpu_priority(live_system, settings):
    def nice(pid: int) -> int:
        # /proc/<pid>/stat: the 19th field is the nice value (after the command in parentheses).
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])

    here = os.getpriority(os.PRIO_PROCESS, 0)
    wait_for(lambda: live_system.children(), timeout=20)
    assert settings.WORKER_NICE > 0
    for pid in [live_system.process.pid, *live_system.children()]:
        assert nice(pid) == min(here + settings.WORKER_NICE, 19), pid
    autogroup = Path(f"/proc/{live_system.process.pid}/autogroup")
    if autogroup.exists():  # its own session: the session yields too, not only the process
        assert autogroup.read_text().split()[-1] == str(settings.WORKER_NICE)


@pytest.mark.django_db(transaction=True)
def test_healthz_is_200_naming_each_dependency_when_all_answer(admin_client, live_system, settings):
    response = admin_client.get("/healthz")
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "redis", "celery_workers", "event_stream"}
    assert all(check["ok"] for check in body["checks"].values())
    assert body["checks"]["celery_workers"]["workers"]
    assert body["checks"]["event_stream"]["stream"] == settings.EVENT_STREAM_NAME


@pytest.mark.django_db
def test_healthz_is_503_naming_the_stream_when_rabbitmq_is_unreachable(admin_client, settings):
    settings.EVENT_STREAM_URL = "amqp://guest:guest@127.0.0.1:1//"
    response = admin_client.get("/healthz")
    body = response.json()
    assert response.status_code == 503 and "event_stream" in body["failing"]
    assert "Connection refused" in body["checks"]["event_stream"]["error"]


@pytest.mark.django_db
def test_healthz_is_503_naming_redis_when_redis_is_unreachable(admin_client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    response = admin_client.get("/healthz")
    body = response.json()
    assert response.status_code == 503
    assert "redis" in body["failing"]
    assert body["checks"]["database"]["ok"] is True
    assert "Error" in body["checks"]["redis"]["error"]


@pytest.mark.django_db
def test_healthz_is_503_when_the_database_is_unreachable(client, monkeypatch):
    from console import health

    def broken() -> dict:
        raise OSError("connection refused")

    monkeypatch.setitem(health.CHECKS, "database", broken)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert "database" in response.json()["failing"]


@pytest.mark.django_db
def test_healthz_tells_anonymous_callers_only_ok_or_failing_per_dependency(client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    response = client.get("/healthz")
    body = response.json()
    assert response.status_code == 503 and body["failing"] == ["redis", "celery_workers"]
    assert body["checks"] == {
        "database": {"ok": True},
        "redis": {"ok": False},
        "celery_workers": {"ok": False},
        "event_stream": {"ok": True},
    }
    assert "127.0.0.1" not in response.content.decode() and "by_kind" not in body["violations"]


@pytest.mark.django_db
def test_healthz_answers_from_memory_between_checks(client, settings, monkeypatch):
    from console import health

    calls = []
    monkeypatch.setattr(health, "CHECKS", {"database": lambda: calls.append(1) or {"ok": True}})
    settings.HEALTH_CACHE_SECONDS = 60
    health.health_cache_clear()
    try:
        answers = [client.get("/healthz").status_code for _ in range(20)]
    finally:
        health.health_cache_clear()
    assert answers == [200] * 20 and len(calls) == 1


def test_production_settings_refuse_to_start_without_a_secret_key(monkeypatch):
    import subprocess
    import sys

    env = {"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "config.settings.production"}
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_production_settings_refuse_to_start_without_envelope_signing_keys():
    import secrets
    import subprocess
    import sys

    for keys in (None, "short", f"{secrets.token_urlsafe(48)},short"):
        env = {
            "PATH": "/usr/bin:/bin",
            "DJANGO_SETTINGS_MODULE": "config.settings.production",
            "SECRET_KEY": secrets.token_urlsafe(64),
            **({"OUTBOX_SIGNING_KEYS": keys} if keys else {}),
        }
        result = subprocess.run(
            [sys.executable, "-c", "import django; django.setup()"], env=env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode != 0, keys
        assert "OUTBOX_SIGNING_KEYS must be set" in result.stderr, keys


def test_production_settings_pass_the_deploy_checks():
    import secrets
    import subprocess
    import sys

    env = {
        "PATH": "/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "SECRET_KEY": secrets.token_urlsafe(64),
        "OUTBOX_SIGNING_KEYS": secrets.token_urlsafe(48),
        "ALLOWED_HOSTS": "backoffice.example.com",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.django_db
def test_an_anonymous_healthz_is_answered_before_django_and_one_with_credentials_by_the_view(settings):
    from console import health

    def django(environ, start_response):
        start_response("204 No Content", [])
        return [b"django"]

    app = health.AnswerAnonymousHealthFirst(django)
    settings.HEALTH_CACHE_SECONDS = 60
    health.health_cache_clear()
    statuses = []
    try:
        anonymous = b"".join(app({"PATH_INFO": "/healthz", "REQUEST_METHOD": "GET"}, lambda s, h: statuses.append(s)))
        signed_in = app(
            {"PATH_INFO": "/healthz", "REQUEST_METHOD": "GET", "HTTP_COOKIE": "sessionid=x"},
            lambda s, h: statuses.append(s),
        )
    finally:
        health.health_cache_clear()
    body = json.loads(anonymous)
    assert set(body["checks"]) == {"database", "redis", "celery_workers", "event_stream"}
    assert all(set(check) == {"ok"} for check in body["checks"].values())
    assert signed_in == [b"django"] and statuses[1] == "204 No Content"
