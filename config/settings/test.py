"""Tests: real PostgreSQL and Redis, a Redis database of their own, fast password hashing."""

import os

from common.env import env_bool, env_int, env_list, env_str

os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/13")

from config.settings.base import *  # noqa: F403
from config.settings.base import INSTALLED_APPS, OUTBOX_SIGNING_KEYS, REST_FRAMEWORK, derived_signing_keys

DEBUG = False
SECRET_KEY = env_str("SECRET_KEY", "test-only-insecure-key")
# The worker processes the tests start read this module too, and derive the same key.
OUTBOX_SIGNING_KEYS = OUTBOX_SIGNING_KEYS or derived_signing_keys(SECRET_KEY)
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

# Every test request comes from 127.0.0.1, and many are meant to be 401s: the per-address budget
# of requests without a valid token is a test's own choice (orders/tests/test_throttling.py).
REST_FRAMEWORK = {
    **REST_FRAMEWORK,
    "DEFAULT_THROTTLE_RATES": {
        **REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
        "storefront_address": env_str("API_ADDRESS_THROTTLE_RATE", "100000/min"),
    },
}
# The event stream on the local RabbitMQ (.ci/run starts it); a stream of the tests' own.
EVENT_STREAM_URL = env_str("EVENT_STREAM_URL", "amqp://guest:guest@127.0.0.1:5672//")
EVENT_STREAM_NAME = env_str("EVENT_STREAM_NAME", "backoffice.events.test")
EVENT_STREAM_CONFIRM_TIMEOUT_SECONDS = 5
EVENT_STREAM_RETRY_MAX_SECONDS = 2
ANALYTICS_TAIL_INTERVAL_SECONDS = 0.5
HEALTH_CACHE_SECONDS = 0  # every test sees the checks of its own moment
# The launcher, benchmarks, chaos harness and their commands: never in production.
INSTALLED_APPS = [*INSTALLED_APPS, "devtools"]

# The suite's operators act alone; the four-eyes tests turn it on (console/tests/test_four_eyes.py).
FOUR_EYES_ENABLED = False
# Alerts are off unless a test points them at its receiver.
ALERT_WEBHOOK_URL = env_str("ALERT_WEBHOOK_URL", "")
ALERT_EMAILS = env_list("ALERT_EMAILS", "")
# The test worker does not run the alert check: the alert tests call it.
ALERT_WATCH_ENABLED = env_bool("ALERT_WATCH_ENABLED", False)
