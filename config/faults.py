"""Fault injection for the fake providers and the message layer, switchable at run time.

Rates live in a Redis hash so that the chaos harness can turn faults on and off in running
workers, effective at the next call (one small Redis read per provider call, and per send and
delivery round of the outbox through FaultyBroker).
Only read when settings.FAULT_INJECTION is on (tests, the chaos harness); production never
reads them.
"""

import random
import time
from typing import TYPE_CHECKING

from django.conf import settings
from redis.exceptions import RedisError

from config.redis import get_redis

if TYPE_CHECKING:
    from outbox.broker import Broker

FAULTS_KEY = "faults"

KNOWN_FAULTS = {
    "gateway_transient": "payment gateway answers a transient error before charging",
    "gateway_timeout_after_charge": "payment gateway charges, then times out",
    "gateway_refund_transient": "payment gateway answers a transient error to refunds only",
    "carrier_transient": "carrier answers a transient error",
    "duplicate_delivery": "a message is sent to the broker twice (FaultyBroker)",
    "reorder_delivery": "a batch is sent to the broker in shuffled order across aggregates (FaultyBroker)",
    "provider_latency_ms": "added latency of fake providers, in milliseconds",
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


class FaultyBroker:
    """The outbox's broker, wrapped to misbehave at the injected rates (installed only with
    settings.FAULT_INJECTION, see outbox.broker): a batch sent in shuffled order
    (``reorder_delivery``), a message sent twice (``duplicate_delivery``). While either is on,
    no message skips the broker by being handled in process, so that they reach every message."""

    def __init__(self, inner: "Broker") -> None:
        self.inner = inner

    def send(self, envelopes: list[dict]) -> None:
        rates = fault_rates()
        duplicate_rate, reorder_rate = rates.get("duplicate_delivery", 0.0), rates.get("reorder_delivery", 0.0)
        if reorder_rate and random.random() < reorder_rate:
            envelopes = random.sample(envelopes, len(envelopes))
        if duplicate_rate:
            envelopes = [copy for envelope in envelopes for copy in _copies(envelope, duplicate_rate)]
        self.inner.send(envelopes)

    def allows_delivery_in_process(self) -> bool:
        rates = fault_rates()
        if rates.get("duplicate_delivery") or rates.get("reorder_delivery"):
            return False
        return self.inner.allows_delivery_in_process()


def _copies(envelope: dict, duplicate_rate: float) -> list[dict]:
    return [envelope, envelope] if random.random() < duplicate_rate else [envelope]
