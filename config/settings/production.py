"""Production: refuses to start without a secret key, and passes ``manage.py check --deploy``."""

from django.core.exceptions import ImproperlyConfigured

from common.env import env_bool, env_int, estimated_entropy_bits
from config.settings.base import *  # noqa: F403
from config.settings.base import MIDDLEWARE, OUTBOX_SIGNING_KEYS, SECRET_KEY

# At start-up, not only in ``check --deploy``: a weak key signs sessions and password resets.
MIN_SECRET_BITS = 200
if not SECRET_KEY or len(SECRET_KEY) < 50:
    raise ImproperlyConfigured(
        "SECRET_KEY must be set in the environment (at least 50 random characters) in production"
    )
if estimated_entropy_bits(SECRET_KEY) < MIN_SECRET_BITS or SECRET_KEY.startswith("django-insecure-"):
    raise ImproperlyConfigured(
        "SECRET_KEY is not random enough for production: generate one with "
        "python -c 'import secrets; print(secrets.token_urlsafe(60))'"
    )

if not OUTBOX_SIGNING_KEYS or any(
    len(key) < 32 or estimated_entropy_bits(key) < MIN_SECRET_BITS / 2 for key in OUTBOX_SIGNING_KEYS
):
    raise ImproperlyConfigured(
        "OUTBOX_SIGNING_KEYS must be set in the environment in production: comma-separated keys of at least "
        "32 random characters, the same on every process (the first signs messages, all verify them)"
    )

DEBUG = False
# Trusted only when a proxy of ours overwrites X-Forwarded-Proto on every request: gunicorn binds
# every interface, and a client reaching it directly could otherwise claim https and skip the
# redirect (and get secure cookies over plain HTTP).
if env_bool("TRUSTED_PROXY_SETS_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
# /healthz is probed over plain HTTP by the load balancer, /metrics scraped by Prometheus.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
# Preloading is opt-in: browsers ship the list, and leaving it takes months. Without it the deploy
# check's preload warning is silenced on purpose.
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
if not SECURE_HSTS_PRELOAD:
    SILENCED_SYSTEM_CHECKS = ["security.W021"]
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# gunicorn serves the static files itself, through WhiteNoise: right after SecurityMiddleware,
# so that the HTTPS redirect still comes first and nothing below it runs for a stylesheet.
# ``collectstatic`` is a release step (README, "Deploying"): the storage below writes each file
# under a name carrying its content's hash, plus a gzip copy, and WhiteNoise serves those names
# with a cache lifetime of ten years and "immutable". The manifest storage is here and not in
# the base settings: without a manifest (tests, runserver) it refuses to render any template
# that links a static file.
MIDDLEWARE = [*MIDDLEWARE]
MIDDLEWARE.insert(
    MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1, "whitenoise.middleware.WhiteNoiseMiddleware"
)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
