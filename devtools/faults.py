"""The faulty broker: the outbox's broker wrapped to misbehave at the rates common.faults reads
at run time. Named by settings.OUTBOX_BROKER_WRAPPER and installed by outbox.broker only with
settings.FAULT_INJECTION (tests, the chaos harness); production never imports it."""

import random
from typing import TYPE_CHECKING

from common.faults import fault_rates

if TYPE_CHECKING:
    from outbox.broker import Broker


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
