"""Settings shared by every environment. Everything that varies comes from the environment."""

import hashlib
import hmac
from pathlib import Path
from urllib.parse import urlsplit

from kombu import Exchange, Queue

from common.env import database_from_url, env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent.parent

SECRET_KEY = env_str("SECRET_KEY", "")
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI and Redoc served from our static files, no CDN
    "django_celery_beat",
    "config",  # tracing set-up (config.apps), /metrics
    "outbox",
    "sagas",
    "orders",
    "payments",
    "inventory",
    "shipping",
    "audit",
    "analytics",  # the read model folded from the event stream
    "console",  # the operators' console: dashboard, saga page, repairs, health, /metrics
]

MIDDLEWARE = [
    "common.request_context.RequestContextMiddleware",
    "outbox.middleware.RelaySendsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "config.csp.ContentSecurityPolicyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASE_URL = env_str("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/backoffice")
DATABASES = {"default": database_from_url(DATABASE_URL)}
# Short-lived connections are reopened per request; workers keep theirs for the process' life.
DATABASES["default"]["CONN_MAX_AGE"] = env_int("DB_CONN_MAX_AGE", 60)
# No "SELECT 1" before every request or task: a connection that raised an error is checked
# (and replaced when broken) at the start of the next one, which is all a terminated backend needs.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = False
# Parameters are bound by the server, and a statement run a few times on a connection is
# prepared once: the outbox, inbox and saga statements run hundreds of times a second and
# skip their planning. (Through PgBouncer in transaction mode, set DB_SERVER_SIDE_BINDING=false.)
DATABASES["default"]["OPTIONS"].setdefault("server_side_binding", env_bool("DB_SERVER_SIDE_BINDING", True))
if DATABASES["default"]["OPTIONS"]["server_side_binding"]:
    # Django turns psycopg's statement preparation off unless asked; without it every statement
    # is parsed and planned again.
    DATABASES["default"]["OPTIONS"].setdefault("prepare_threshold", env_int("DB_PREPARE_THRESHOLD", 5))
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "backoffice",
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
# One time format in every admin list, form and template: UTC to the second (config/formats).
FORMAT_MODULE_PATH = ["config.formats"]

STATIC_URL = "static/"
# Where ``collectstatic`` gathers the admin's and the API docs' files for gunicorn to serve
# (production settings, through WhiteNoise). A run of the chaos harness or a benchmark collects
# into a folder of its own, so it never rewrites a deployment's.
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles")))

EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "orders@backoffice.example")
# A cancelled order that was never charged (a declined card) gets no email unless this is on:
# anyone can place an order for any address, and such an email would cost them nothing.
NOTIFY_UNCHARGED_CANCELLATIONS = env_bool("NOTIFY_UNCHARGED_CANCELLATIONS", False)

# ---------------------------------------------------------------------------
# Celery. Every setting is explicit; the comment says what failure it prevents.
# ---------------------------------------------------------------------------
# Redis (the default) or RabbitMQ (an amqp:// URL); the README's "Choosing the broker" weighs them.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL)
BROKER_IS_RABBITMQ = urlsplit(CELERY_BROKER_URL).scheme in ("amqp", "amqps", "pyamqp")
# Results are not used for control flow (the database is the source of truth).
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
# JSON only: a pickled payload from a compromised broker would run code.
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
# Acknowledge after the task ran, and give the message back when the worker child dies:
# a SIGKILL mid-handler must lead to a redelivery, never to a lost message.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# One message at a time per child, so a dying child takes only its own message with it.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# How much lower the worker's CPU priority is than the web's (0: the same): on a machine both
# share, the storefront answers first and the sagas catch up (config/celery.py).
WORKER_NICE = env_int("WORKER_NICE", 10)
# No task may run for ever; the soft limit raises inside the task so it can clean up.
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 60)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 90)
# Redis redelivers an unacknowledged message after the visibility timeout. It must be longer
# than any task (and any retry countdown), or a slow task would run twice at once.
# RabbitMQ redelivers when the consumer's connection or channel goes, and confirms every publish
# of Celery's own (a retry, a nudge): a retry acknowledges its message once its copy was sent, and
# an unconfirmed copy could die with the broker. The relay confirms a batch at a time
# (outbox/rabbitmq.py).
CELERY_BROKER_TRANSPORT_OPTIONS = (
    {"confirm_publish": True}
    if BROKER_IS_RABBITMQ
    else {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600)}
)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# kombu's Redis transport with a repair for celery 5.7's clean-up after a lost broker, which
# otherwise kills the worker within a few dozen broker restarts under load (config/broker.py).
# A transport named here overrides the URL's scheme, so RabbitMQ keeps kombu's py-amqp transport.
CELERY_BROKER_TRANSPORT = None if BROKER_IS_RABBITMQ else "config.broker:Transport"
# Celery's prefork pool with a repair for a child that died while the consumer reconnected to a
# lost broker, which otherwise ends the worker on its next connection (config/pool.py).
CELERY_WORKER_POOL = "config.pool:TaskPool"
CELERY_TASK_DEFAULT_QUEUE = "default"
# One queue per consuming context, so a slow context never starves another.
MESSAGE_QUEUES = ["orders", "payments", "inventory", "shipping", "sagas"]
# Each queue has its own routing key on one exchange. (A bare Queue(name) would be bound to the
# default exchange with the default routing key, and every message would be copied into every
# queue.) A topic exchange, because RabbitMQ's native delayed delivery (a retry's countdown, a
# delayed nudge) routes only through topic or fanout exchanges; the routing keys hold no
# wildcard, so it routes as a direct one would, on Redis too.
CELERY_TASK_DEFAULT_EXCHANGE = "backoffice"
CELERY_TASK_DEFAULT_EXCHANGE_TYPE = "topic"
CELERY_TASK_DEFAULT_ROUTING_KEY = "default"
_EXCHANGE = Exchange("backoffice", type="topic")
# On RabbitMQ every queue is a quorum queue: durable, replicated over the cluster's nodes (Raft),
# a message confirmed to the publisher only once a majority has written it. They have no global
# QoS (Celery sees the argument and sets a per-consumer prefetch) and no per-message TTL, so Celery
# delays messages through its "celery_delayed_*" exchanges and queues, which the worker declares.
# Redis ignores queue arguments.
CELERY_TASK_DEFAULT_QUEUE_TYPE = "quorum"
CELERY_TASK_CREATE_MISSING_QUEUE_TYPE = "quorum"
CELERY_WORKER_DETECT_QUORUM_QUEUES = True
_QUORUM = {"x-queue-type": "quorum"}
CELERY_TASK_QUEUES = [
    Queue(name, _EXCHANGE, routing_key=name, durable=True, queue_arguments=_QUORUM)
    for name in ["default", "relay", *MESSAGE_QUEUES]
]
CELERY_TASK_ROUTES = {"outbox.relay": {"queue": "relay"}}
# Celery's Django fixup closes the database connection around every task unless told to reuse
# it; a new PostgreSQL connection per message would cost more than the message's own work.
# Connections are still recycled after this many tasks, and checked before use.
CELERY_DB_REUSE_MAX = env_int("CELERY_DB_REUSE_MAX", 1000)
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_WORKER_SEND_TASK_EVENTS = False
CELERY_TIMEZONE = "UTC"
# django-celery-beat's database scheduler, writing beat's heartbeat as it ticks (config/beat.py).
CELERY_BEAT_SCHEDULER = "config.beat:Scheduler"
# The worker and beat renew a Redis key this often, which expires after the TTL: the dashboard
# says within that long that no live worker or beat is left (common/heartbeat.py).
HEARTBEAT_INTERVAL_SECONDS = env_int("HEARTBEAT_INTERVAL_SECONDS", 2)
HEARTBEAT_TTL_SECONDS = env_int("HEARTBEAT_TTL_SECONDS", 10)
# /healthz answers from memory for this long in each web process (0: checks on every call).
HEALTH_CACHE_SECONDS = env_int("HEALTH_CACHE_SECONDS", 2)

# Four eyes on money (console/four_eyes.py): an operator's action that moves money (a charge or
# refund marked done by hand, a compensation that refunds, a retried refund) on an order of at
# least this amount (minor units; 0: every amount) waits for a second operator's approval.
FOUR_EYES_ENABLED = env_bool("FOUR_EYES_ENABLED", True)
FOUR_EYES_MIN_AMOUNT = env_int("FOUR_EYES_MIN_AMOUNT", 0)
# The saga steps whose forward effect or compensation moves money.
FOUR_EYES_STEPS = env_list("FOUR_EYES_STEPS", "charge_payment")
# A request not decided within this long can no longer be approved.
FOUR_EYES_EXPIRY_HOURS = env_int("FOUR_EYES_EXPIRY_HOURS", 24)

# Alerts (console/alerts.py): one per incident (stuck or failed sagas at a step, dead letters of
# a consumer, open violations of a kind, no live worker or beat), to a webhook and/or by email.
ALERT_WEBHOOK_URL = env_str("ALERT_WEBHOOK_URL", "")
ALERT_EMAILS = env_list("ALERT_EMAILS", "")
CONSOLE_BASE_URL = env_str("CONSOLE_BASE_URL", "http://127.0.0.1:8000")
# The check runs on the worker and on beat (console/alert_watch.py) every this many seconds.
ALERT_WATCH_ENABLED = env_bool("ALERT_WATCH_ENABLED", True)
ALERT_CHECK_SECONDS = env_int("ALERT_CHECK_SECONDS", 5)
ALERT_MAX_ATTEMPTS = env_int("ALERT_MAX_ATTEMPTS", 8)
ALERT_RETRY_BASE_SECONDS = float(env_str("ALERT_RETRY_BASE_SECONDS", "5"))
ALERT_RETRY_MAX_SECONDS = float(env_str("ALERT_RETRY_MAX_SECONDS", "600"))
ALERT_TIMEOUT_SECONDS = float(env_str("ALERT_TIMEOUT_SECONDS", "5"))

# ---------------------------------------------------------------------------
# Messaging and sagas.
# ---------------------------------------------------------------------------
# Fault injection (common/faults.py) for tests and the chaos harness; never in production.
FAULT_INJECTION = env_bool("FAULT_INJECTION", False)
# With FAULT_INJECTION on, the outbox sends through this wrapper of its broker (duplicates and
# reordering at the rates common.faults reads at run time).
OUTBOX_BROKER_WRAPPER = "devtools.faults.FaultyBroker"
OUTBOX_RELAY_BATCH_SIZE = env_int("OUTBOX_RELAY_BATCH_SIZE", 500)
# On RabbitMQ, how long the relay waits for the broker to confirm a batch before it gives the
# batch back to the outbox (sent again later; the inbox absorbs the copies that did arrive).
OUTBOX_BROKER_CONFIRM_TIMEOUT_SECONDS = float(env_str("OUTBOX_BROKER_CONFIRM_TIMEOUT_SECONDS", "10"))
OUTBOX_MAX_ATTEMPTS = env_int("OUTBOX_MAX_ATTEMPTS", 6)
OUTBOX_RETRY_BASE_SECONDS = float(env_str("OUTBOX_RETRY_BASE_SECONDS", "0.5"))
OUTBOX_RETRY_MAX_SECONDS = float(env_str("OUTBOX_RETRY_MAX_SECONDS", "30"))
OUTBOX_RETENTION_DAYS = env_int("OUTBOX_RETENTION_DAYS", 7)
OUTBOX_NUDGE_DEBOUNCE_MS = env_int("OUTBOX_NUDGE_DEBOUNCE_MS", 1000)
# Consumers every process runs, whose messages (for handlers without an outside call) are
# handed to the handler in the process that committed them, right after the commit, still
# through the outbox row and the inbox: saga replies, stock reservations and order
# confirmations then cost no broker round trip. Remove a consumer from the list when it runs
# on workers of its own.
OUTBOX_LOCAL_CONSUMERS = env_list("OUTBOX_LOCAL_CONSUMERS", "sagas,inventory,orders")
# Every envelope sent to the broker is signed (HMAC-SHA256) with the first of these keys and
# accepted under any of them (outbox.signing): a message nobody holding a key wrote takes no
# effect. The same list on every process; to rotate, put the new key first everywhere, and drop
# the old one once the queues have drained. Required in production; the dev and test settings
# derive one from their SECRET_KEY.
OUTBOX_SIGNING_KEYS = env_list("OUTBOX_SIGNING_KEYS", "")

# Integration events (outbox.events) go to a durable stream that outside consumers, the analytics
# context among them, read at their own pace (outbox.stream). Empty: no stream, and no events
# are recorded. The RabbitMQ adapter takes an amqp:// URL (RabbitMQ 3.9+, streams over AMQP 0.9.1).
EVENT_STREAM_URL = env_str("EVENT_STREAM_URL", "")
EVENT_STREAM_ADAPTER = env_str("EVENT_STREAM_ADAPTER", "outbox.stream.RabbitMQStream")
EVENT_STREAM_NAME = env_str("EVENT_STREAM_NAME", "backoffice.events")
# Retention: RabbitMQ drops whole segments older than the age or beyond the size. A rebuild of a
# read model (analytics_rebuild) can only go back as far as this.
EVENT_STREAM_MAX_AGE = env_str("EVENT_STREAM_MAX_AGE", "30D")
EVENT_STREAM_MAX_BYTES = env_int("EVENT_STREAM_MAX_BYTES", 20 * 2**30)
EVENT_STREAM_SEGMENT_BYTES = env_int("EVENT_STREAM_SEGMENT_BYTES", 100 * 2**20)
EVENT_STREAM_CONFIRM_TIMEOUT_SECONDS = float(env_str("EVENT_STREAM_CONFIRM_TIMEOUT_SECONDS", "10"))
EVENT_STREAM_RETRY_MAX_SECONDS = float(env_str("EVENT_STREAM_RETRY_MAX_SECONDS", "30"))
# How often the analytics consumer looks up the stream's tail (its lag) and renews its heartbeat.
ANALYTICS_TAIL_INTERVAL_SECONDS = float(env_str("ANALYTICS_TAIL_INTERVAL_SECONDS", "2"))


def derived_signing_keys(secret_key: str) -> list[str]:
    """Outside production: one envelope key derived from SECRET_KEY, never SECRET_KEY itself."""
    return [hmac.new(secret_key.encode(), b"outbox envelopes", hashlib.sha256).hexdigest()]


LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "common.logging.ContextFilter"}},
    "formatters": {"json": {"()": "common.logging.JsonFormatter"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "filters": ["context"],
            "formatter": "json",
        }
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "celery": {"level": "INFO"},
        # One line per task with its arguments is noise at this volume; failures still show.
        "celery.app.trace": {"level": "WARNING"},
        "celery.worker.strategy": {"level": "WARNING"},
    },
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["orders.api.authentication.StorefrontTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # The storefront API speaks JSON only: another content type is a 415, not a guess.
    "DEFAULT_PARSER_CLASSES": ["orders.api.parsers.StorefrontJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # Every error, in one shape ({"error": {"code", "message", "fields"}}), mapped in one place.
    "EXCEPTION_HANDLER": "orders.api.errors.exception_handler",
    # One budget per client, counted in Redis so that all web processes share it: ten orders a
    # second, well above a storefront's peak, far below what would make the shop a mailer
    # (the benchmarks raise it). Requests with no token or a bad one have a budget per address
    # (checked by the authentication class, before DRF's 401).
    "DEFAULT_THROTTLE_CLASSES": ["orders.api.throttling.StorefrontClientThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "storefront_client": env_str("API_THROTTLE_RATE", "600/min"),
        "storefront_address": env_str("API_ADDRESS_THROTTLE_RATE", "60/min"),
    },
    # How many proxies of ours append to X-Forwarded-For: 0 trusts only the peer's address
    # (a client can write any X-Forwarded-For it likes).
    "NUM_PROXIES": env_int("API_TRUSTED_PROXY_HOPS", 0),
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Order backoffice storefront API",
    "VERSION": "1.0.0",
    "DESCRIPTION": (
        "The storefront API of the order backoffice. Authenticate with `Authorization: Token <key>`; "
        "a client sees only its own orders.\n\n"
        "Every 4xx answer has one shape: "
        '`{"error": {"code": "validation_error", "message": "...", "fields": {"lines.0.quantity": ["..."]}}}`. '
        "`POST /api/v1/orders/` requires an `Idempotency-Key` header: a retry with the same key and body gets "
        "the first response again, byte for byte, and creates nothing."
    ),
    # 3.1: its schemas are JSON Schema, in which "an order or null" has one meaning (3.0's
    # `nullable` beside a reference has none that strict validators accept).
    "OAS_VERSION": "3.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Docstrings are for the code's readers; what clients read is written for them, in
    # summaries, descriptions and help texts.
    "DISABLE_DOCSTRING_DESCRIPTIONS": True,
    # Enums are described by orders.api.schema.postprocess_enum_labels instead, once each.
    "ENUM_GENERATE_CHOICE_DESCRIPTION": False,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "orders.api.schema.postprocess_enum_labels",
    ],
    # The schema and the docs are public (they hold no data); the API itself needs a token.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "OrderStatusEnum": "orders.models.Order.Status",
        "CountryEnum": "orders.countries.ISO_3166_ALPHA2",
        "PaymentStatusEnum": "orders.api.serializers.PAYMENT_STATUSES",
        "InventoryStatusEnum": "orders.api.serializers.INVENTORY_STATUSES",
        "ShipmentStatusEnum": "orders.api.serializers.SHIPMENT_STATUSES",
        "SagaStateEnum": "orders.api.serializers.SAGA_STATES",
        "SagaPhaseEnum": "orders.api.serializers.SAGA_PHASES",
        "SagaStepOutcomeEnum": "orders.api.serializers.SAGA_STEP_OUTCOMES",
    },
}

# Django refuses a larger body before reading it (the API answers 413); form posts in the
# admin are far below it.
DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024
# Idempotency keys: kept 24 hours (Stripe's rule), purged in batches by beat. A claim held
# longer than the timeout (gunicorn's default worker timeout: a request that old was killed)
# belongs to a request that died, and a retry may take it over; taking over from one that is
# merely slow is safe too, it finds its claim gone before it commits anything.
IDEMPOTENCY_KEY_TTL_SECONDS = env_int("IDEMPOTENCY_KEY_TTL_SECONDS", 24 * 3600)
IDEMPOTENCY_IN_FLIGHT_TIMEOUT_SECONDS = env_int("IDEMPOTENCY_IN_FLIGHT_TIMEOUT_SECONDS", 30)
IDEMPOTENCY_PURGE_BATCH_SIZE = env_int("IDEMPOTENCY_PURGE_BATCH_SIZE", 1000)

# /metrics: open to loopback and these networks (CIDR, comma-separated), or to a request
# carrying "Authorization: Bearer <METRICS_TOKEN>" (see console.metrics_endpoint).
METRICS_ALLOWED_NETWORKS = env_list("METRICS_ALLOWED_NETWORKS", "")
METRICS_TOKEN = env_str("METRICS_TOKEN", "")

SAGA_STEP_DEADLINE_SECONDS = env_int("SAGA_STEP_DEADLINE_SECONDS", 300)
SAGA_RESEND_AFTER_SECONDS = env_int("SAGA_RESEND_AFTER_SECONDS", 60)
SAGA_STEP_MAX_ATTEMPTS = env_int("SAGA_STEP_MAX_ATTEMPTS", 5)
SAGA_RETRY_BASE_SECONDS = float(env_str("SAGA_RETRY_BASE_SECONDS", "1"))
SAGA_RETRY_MAX_SECONDS = float(env_str("SAGA_RETRY_MAX_SECONDS", "30"))

# A bulk repair from the console sends the sagas after its canary at most this many a minute
# unless the operator asks for another rate (console.bulk_repairs): a repair of hundreds of
# sagas does not land on a provider that just came back as one burst.
CONSOLE_BULK_REPAIR_RATE_PER_MINUTE = env_int("CONSOLE_BULK_REPAIR_RATE_PER_MINUTE", 60)
CONSOLE_BULK_REPAIR_MAX_RATE_PER_MINUTE = env_int("CONSOLE_BULK_REPAIR_MAX_RATE_PER_MINUTE", 600)
