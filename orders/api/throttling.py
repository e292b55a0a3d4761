"""Request rate limits, per client and per address (a 429 with Retry-After beyond them)."""

import functools
import ipaddress
import logging
import math
import threading
import time
from collections import OrderedDict

from redis.commands.core import Script
from redis.exceptions import RedisError
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from common.redis import get_redis

logger = logging.getLogger(__name__)

# A sliding window estimated from two fixed ones: the requests of the current window, plus
# those of the previous one weighted by how much of it the sliding window still covers.
# Checked and counted in one atomic step, in one round trip, whatever the rate: a request that
# is refused is not counted, and two web processes cannot both take the last request left.
_TAKE_SCRIPT = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local previous = tonumber(redis.call('GET', KEYS[2]) or '0')
if previous * tonumber(ARGV[2]) + current >= tonumber(ARGV[1]) then
    return {0, current, previous}
end
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {1, current + 1, previous}
"""


class SlidingWindowThrottle(SimpleRateThrottle):
    """A budget per key over a sliding window, counted in Redis, so that every web process sees
    the same counts. Subclasses name the scope and the key."""

    def get_rate(self) -> str | None:
        # Read on every request rather than frozen at import time (as DRF's class attribute
        # is), so that a settings change, in tests or a reload, takes effect.
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    def allow_request(self, request, view) -> bool:
        if self.rate is None:
            return True
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        now = time.time()
        window = int(now // self.duration)
        self._elapsed = now - window * self.duration
        weight = 1 - self._elapsed / self.duration  # of the previous window
        keys = [f"{key}:{window}", f"{key}:{window - 1}"]
        try:
            allowed, self._current, self._previous = _take(
                keys=keys, args=[self.num_requests, weight, 2 * self.duration]
            )
        except (RedisError, OSError):
            # The counters live in Redis; while it is down, orders still go through (they do
            # not need Redis: the outbox holds their messages) rather than fail with a 500, but
            # within the same budget counted by this process alone (see _LocalWindows).
            logger.warning("throttle counters unavailable; counted in this process")
            allowed, self._current, self._previous = _local_windows.take(
                keys=keys, limit=self.num_requests, weight=weight
            )
        return bool(allowed)

    def wait(self) -> float:
        """Seconds until the estimate falls below the budget again (a request is then let through)."""
        if self._current >= self.num_requests:
            # Only a later window helps, and in the next one this window's count still weighs:
            # the estimate falls below the budget once its weight is below num_requests / current.
            later = self.duration - self._elapsed + self.duration * (1 - self.num_requests / self._current)
        else:
            # The first t with previous * (1 - (elapsed + t) / duration) + current < num_requests.
            later = self.duration * (1 - (self.num_requests - self._current) / self._previous) - self._elapsed
        return max(1.0, math.floor(later) + 1)


class StorefrontClientThrottle(SlidingWindowThrottle):
    """One budget per storefront client (its user id)."""

    scope = "storefront_client"

    def get_cache_key(self, request, view) -> str | None:
        if not request.user or not request.user.is_authenticated:
            return None
        return f"throttle:{self.scope}:{request.user.pk}"


class StorefrontAddressThrottle(SlidingWindowThrottle):
    """One budget per address for the requests that name no client: no token, or a bad one.
    Checked by the authentication itself (orders.api.authentication), since DRF answers those
    401 before it looks at any throttle: guessing tokens, or flooding the API with 401s, then
    costs the sender and not the shop. An IPv6 sender is counted by its /64, which one host
    usually holds whole."""

    scope = "storefront_address"

    def get_cache_key(self, request, view) -> str | None:
        return f"throttle:{self.scope}:{_network_of(self.get_ident(request))}"


def _network_of(ident: str | None) -> str:
    try:
        address = ipaddress.ip_address(ident or "")
    except ValueError:
        return str(ident or "")[:64] or "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class _LocalWindows:
    """The fallback while Redis is down: the same sliding window, counted in this process's
    memory. Each process then allows the whole budget on its own (with N gunicorn workers, up
    to N times it in all) until Redis is back: bounded, where the alternatives are no limit or
    refusing every request. At most MAX_KEYS counters are kept, the least recently used dropped
    first, so that a flood of addresses cannot grow the process."""

    MAX_KEYS = 10_000

    def __init__(self) -> None:
        self._counts: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, *, keys: list[str], limit: int, weight: float) -> tuple[int, int, int]:
        current_key, previous_key = keys
        with self._lock:
            current, previous = self._counts.get(current_key, 0), self._counts.get(previous_key, 0)
            if previous * weight + current >= limit:
                return 0, current, previous
            self._counts[current_key] = current + 1
            self._counts.move_to_end(current_key)
            while len(self._counts) > self.MAX_KEYS:
                self._counts.popitem(last=False)
            return 1, current + 1, previous

    def __len__(self) -> int:
        return len(self._counts)


_local_windows = _LocalWindows()


def _take(*, keys: list[str], args: list[object]) -> list[int]:
    # EVALSHA, and EVAL once more if Redis lost its scripts (a restart).
    return _take_script()(keys=keys, args=args)


@functools.cache
def _take_script() -> Script:
    return get_redis().register_script(_TAKE_SCRIPT)
