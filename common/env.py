"""Reading settings from the environment (12-factor), with typed helpers."""

import math
import os
from collections import Counter
from urllib.parse import parse_qs, unquote, urlparse


class ImproperlyConfiguredEnvironment(RuntimeError):
    """A required environment variable is missing or malformed."""


def env_str(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if value is None:
        raise ImproperlyConfiguredEnvironment(f"the environment variable {name} is required")
    return value


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return default if value is None else int(value)


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def database_from_url(url: str) -> dict:
    """Turn ``postgres://user:password@host:port/name?sslmode=...`` into a DATABASES entry."""
    parsed = urlparse(url)
    if parsed.scheme not in {"postgres", "postgresql", "pgsql"}:
        raise ImproperlyConfiguredEnvironment(f"DATABASE_URL must be a postgres:// URL, not {parsed.scheme}://")
    options = {key: values[-1] for key, values in parse_qs(parsed.query).items()}
    host = unquote(parsed.hostname or "")
    if "host" in options:  # a Unix socket folder, as pgserver hands out
        host = options.pop("host")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parsed.path.lstrip("/")) or "backoffice",
        "USER": unquote(parsed.username or "postgres"),
        "PASSWORD": unquote(parsed.password or ""),
        "HOST": host,
        "PORT": str(parsed.port or ""),
        "OPTIONS": options,
    }


def estimated_entropy_bits(secret: str) -> float:
    """The secret's length times the Shannon entropy of its characters: a rough upper bound on
    how random it is, enough to refuse the obvious (50 identical characters score 0, a phrase
    of words little, ``secrets.token_urlsafe(50)`` over 300)."""
    if not secret:
        return 0.0
    counts = Counter(secret)
    per_char = -sum(n / len(secret) * math.log2(n / len(secret)) for n in counts.values())
    return per_char * len(secret)
