"""Fault injection for the fake providers and the message layer, switchable at run time.

Rates live in a Redis hash so that the chaos harness can turn faults on and off in running
workers, effective at the next call (one small Redis read per provider call, and per send and
delivery round of the outbox through devtools.faults.FaultyBroker).
Only read when settings.FAULT_INJECTION is on (tests, the chaos harness); production never
reads them.
"""

import random
import time

from django.conf import settings
from redis.exceptions import RedisError

from common.redis import get_redis

FAULTS_KEY = "faults"

KNOWN_FAULTS = {
    "gateway_transient": "payment gateway answers a transient error before charging",
    "gateway_timeout_after_charge": "payment gateway charges, then times out",
    "gateway_refund_transient": "payment gateway answers a transient error to refunds only",
    "carrier_transient": "carrier answers a transient error",
    "duplicate_delivery": "a message is sent to the broker twice",
    "reorder_delivery": "a batch is sent to the broker in shuffled order across aggregates",
    "provider_latency_ms": "added latency of fake providers, in milliseconds",
    "analytics_fold_pause_ms": "the analytics consumer waits inside a batch's transaction, before it commits",
}


def fault_rates() -> dict[str, float]:
    """The injected fault rates; always none unless settings.FAULT_INJECTION is on, so that a
    production process never spends a Redis round trip on them."""
    if not settings.FAULT_INJECTION:
        return {}
    try:
        raw = get_redis().hgetall(FAULTS_KEY)
        return {key.decode(): float(value) for key, value in raw.items()}
    except (RedisError, OSError, ValueError):
        return {}


def fault_rate(name: str) -> float:
    return fault_rates().get(name, 0.0)


def fault_fires(name: str) -> bool:
    rate = fault_rate(name)
    return rate > 0 and random.random() < rate


def faults_set(**rates: float) -> None:
    unknown = set(rates) - set(KNOWN_FAULTS)
    if unknown:
        raise ValueError(f"unknown faults: {sorted(unknown)}")
    client = get_redis()
    client.delete(FAULTS_KEY)
    if rates:
        client.hset(FAULTS_KEY, mapping={key: str(value) for key, value in rates.items()})


def faults_clear() -> None:
    get_redis().delete(FAULTS_KEY)


def injected_latency() -> None:
    latency_ms = fault_rate("provider_latency_ms")
    if latency_ms > 0:
        time.sleep(latency_ms / 1000)
