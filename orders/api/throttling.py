"""Per-client request rate limits (a 429 with Retry-After beyond them)."""

import logging

from redis.exceptions import RedisError
from rest_framework.settings import api_settings
from rest_framework.throttling import UserRateThrottle

logger = logging.getLogger(__name__)


class StorefrontClientThrottle(UserRateThrottle):
    """One budget per storefront client (its user id), counted in the shared cache (Redis),
    so that every web process sees the same counts."""

    scope = "storefront_client"

    def get_rate(self) -> str | None:
        # Read on every request rather than frozen at import time (as DRF's class attribute
        # is), so that a settings change, in tests or a reload, takes effect.
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    def allow_request(self, request, view) -> bool:
        try:
            return super().allow_request(request, view)
        except (RedisError, OSError):
            # The counters live in Redis; while it is down, orders still go through (they do
            # not need Redis: the outbox holds their messages) rather than fail with a 500.
            logger.warning("throttle counters unavailable; request allowed")
            return True
