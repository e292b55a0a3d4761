"""Tests: real PostgreSQL and Redis, a Redis database of their own, fast password hashing."""

import os

from config.env import env_int, env_str

os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/13")

from config.settings.base import *  # noqa: F403

DEBUG = False
SECRET_KEY = env_str("SECRET_KEY", "test-only-insecure-key")
ALLOWED_HOSTS = ["*"]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
FAULT_INJECTION = True
OUTBOX_RETRY_BASE_SECONDS = 0.05
OUTBOX_RETRY_MAX_SECONDS = 0.5

# Retries and deadlines short enough for tests to watch them play out; the worker process the
# tests start reads this same module.
OUTBOX_MAX_ATTEMPTS = 3
SAGA_STEP_MAX_ATTEMPTS = 3
SAGA_RETRY_BASE_SECONDS = 0.1
SAGA_RETRY_MAX_SECONDS = 0.5
SAGA_RESEND_AFTER_SECONDS = env_int("SAGA_RESEND_AFTER_SECONDS", 5)
OUTBOX_NUDGE_DEBOUNCE_MS = 200

# Heartbeats short enough for a test to watch a dead worker expire.
HEARTBEAT_INTERVAL_SECONDS = 1
HEARTBEAT_TTL_SECONDS = 3
