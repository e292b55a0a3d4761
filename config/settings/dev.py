"""Local development: DEBUG on, an insecure key that is only ever used on a laptop."""

from config.env import env_str
from config.settings.base import *  # noqa: F403

DEBUG = True
SECRET_KEY = env_str("SECRET_KEY", "dev-only-insecure-key-never-used-in-production")
ALLOWED_HOSTS = ["*"]
