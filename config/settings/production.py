"""Production: refuses to start without a secret key, and passes ``manage.py check --deploy``."""

from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_int
from config.settings.base import *  # noqa: F403
from config.settings.base import MIDDLEWARE, OUTBOX_SIGNING_KEYS, SECRET_KEY

if not SECRET_KEY or len(SECRET_KEY) < 50:
    raise ImproperlyConfigured(
        "SECRET_KEY must be set in the environment (at least 50 random characters) in production"
    )

if not OUTBOX_SIGNING_KEYS or any(len(key) < 32 for key in OUTBOX_SIGNING_KEYS):
    raise ImproperlyConfigured(
        "OUTBOX_SIGNING_KEYS must be set in the environment in production: comma-separated keys of at least "
        "32 random characters, the same on every process (the first signs messages, all verify them)"
    )

DEBUG = False
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
# /healthz is probed over plain HTTP by the load balancer, /metrics scraped by Prometheus.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
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
