"""Local development: DEBUG on, an insecure key that is only ever used on a laptop."""

from common.env import env_str
from config.settings.base import *  # noqa: F403
from config.settings.base import INSTALLED_APPS, OUTBOX_SIGNING_KEYS, derived_signing_keys

DEBUG = True
SECRET_KEY = env_str("SECRET_KEY", "dev-only-insecure-key-never-used-in-production")
OUTBOX_SIGNING_KEYS = OUTBOX_SIGNING_KEYS or derived_signing_keys(SECRET_KEY)
ALLOWED_HOSTS = ["*"]
# The launcher, benchmarks, chaos harness and their commands: never in production.
INSTALLED_APPS = [*INSTALLED_APPS, "devtools"]
