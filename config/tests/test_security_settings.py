"""Production's start-up checks and headers: the proxy header only when a proxy is trusted, HSTS
preload opt-in, a Content-Security-Policy on the HTML pages, a SECRET_KEY that is random."""

import json
import re
import secrets
import subprocess
import sys

import pytest
from django.test import Client

from config.settings.base import BASE_DIR

PROBE = """
import json, django
django.setup()
from django.conf import settings
from django.test import Client
client = Client()
answer = client.get("/no-such-page", HTTP_X_FORWARDED_PROTO="https", HTTP_HOST="shop.example")
print(json.dumps({"status": answer.status_code, "preload": settings.SECURE_HSTS_PRELOAD,
                  "hsts": answer.get("Strict-Transport-Security", "")}))
"""


def _production(**env: str) -> subprocess.CompletedProcess:
    environment = {
        "PATH": "/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "SECRET_KEY": secrets.token_urlsafe(64),
        "OUTBOX_SIGNING_KEYS": secrets.token_urlsafe(48),
        "ALLOWED_HOSTS": "shop.example",
        "DATABASE_URL": "postgres://nobody@127.0.0.1:1/none",  # never reached
        "REDIS_URL": "redis://127.0.0.1:1/0",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-c", PROBE], env=environment, cwd=BASE_DIR, capture_output=True, text=True, timeout=120
    )


def _probe(**env: str) -> dict:
    result = _production(**env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_direct_x_forwarded_proto_is_not_trusted_unless_a_proxy_is_said_to_overwrite_it():
    assert _probe()["status"] == 301, "plain HTTP claiming https is still redirected"
    trusted = _probe(TRUSTED_PROXY_SETS_X_FORWARDED_PROTO="true")
    assert trusted["status"] == 404 and trusted["hsts"] and "preload" not in trusted["hsts"]


def test_hsts_preload_is_opt_in():
    assert _probe()["preload"] is False
    opted = _probe(TRUSTED_PROXY_SETS_X_FORWARDED_PROTO="true", SECURE_HSTS_PRELOAD="true")
    assert opted["preload"] is True and "preload" in opted["hsts"]


@pytest.mark.parametrize("key", ["a" * 50, "ab" * 40, "django-insecure-" + secrets.token_urlsafe(60)])
def test_production_refuses_a_secret_key_that_is_not_random(key):
    result = _production(SECRET_KEY=key)
    assert result.returncode != 0 and "SECRET_KEY is not random enough" in result.stderr


def test_production_refuses_an_envelope_key_that_is_not_random():
    result = _production(OUTBOX_SIGNING_KEYS="x" * 64)
    assert result.returncode != 0 and "OUTBOX_SIGNING_KEYS must be set" in result.stderr


@pytest.mark.django_db
def test_the_admin_and_the_api_docs_carry_a_content_security_policy_and_no_inline_script(admin_client):
    for url in ("/admin/login/", "/api/docs/"):
        response = Client().get(url)
        assert response.status_code == 200
        policy = response["Content-Security-Policy"]
        assert "script-src 'self' 'nonce-" in policy and "frame-ancestors 'none'" in policy
        assert "unsafe-eval" not in policy and "script-src 'self' 'unsafe-inline'" not in policy
        scripts = re.findall(r"<script([^>]*)>", response.content.decode())
        assert scripts and all("src=" in attributes for attributes in scripts), (url, scripts)
    script = Client().get("/api/docs/?script=")
    assert script.status_code == 200 and "SwaggerUIBundle" in script.content.decode()

    dashboard = admin_client.get("/admin/sagas/sagainstance/dashboard/")
    nonce = re.search(r"'nonce-([^']+)'", dashboard["Content-Security-Policy"]).group(1)
    assert f'<script nonce="{nonce}">' in dashboard.content.decode()


def test_the_api_answers_carry_no_policy_they_do_not_need(client, db):
    assert "Content-Security-Policy" not in client.get("/api/v1/products/")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["manage.py", "runserver"], "dev"),
        (["manage.py", "runserver", "8000"], "dev"),
        (["manage.py", "runserver", "127.0.0.1:8000", "--noreload"], "dev"),
        (["manage.py", "runserver", "localhost:9000"], "dev"),
        (["manage.py", "runserver", "[::1]:8000"], "dev"),
        (["manage.py", "runserver", "0.0.0.0:8000"], "production"),
        (["manage.py", "runserver", "0:8000"], "production"),
        (["manage.py", "runserver", "--noreload", "192.0.2.1:80"], "production"),
        (["manage.py", "migrate"], "production"),
        (["manage.py", "shell"], "production"),
    ],
)
def test_without_a_settings_module_only_runserver_on_loopback_gets_the_development_settings(argv, expected):
    from manage import default_settings_module

    assert default_settings_module(argv) == f"config.settings.{expected}"


@pytest.mark.parametrize(
    ("command", "refusal"),
    [
        ([sys.executable, "manage.py", "check"], "SECRET_KEY must be set"),  # production, without its secrets
        ([sys.executable, "-m", "celery", "-A", "config", "inspect", "ping"], "DJANGO_SETTINGS_MODULE"),
    ],
)
def test_manage_and_celery_without_a_settings_module_never_start_with_the_development_settings(command, refusal):
    result = subprocess.run(
        command, env={"PATH": "/usr/bin:/bin"}, cwd=BASE_DIR, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0 and refusal in result.stderr + result.stdout, result.stderr[-2000:]
