"""One Redis connection pool per process, for locks, nudges and health checks."""

from functools import cache

from django.conf import settings
from redis import Redis


@cache
def get_redis() -> Redis:
    return Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
