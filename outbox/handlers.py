"""The messaging layer's own message: ``ping``, a no-op handled through the inbox.

Used by benchmarks and delivery tests to measure the machinery itself: its only effect is
the inbox row that proves it was handled exactly once.
"""

from outbox.consumer import register
from outbox.messages import Message

PING = "ping"
CONSUMER = "default"


def ping(message: Message, _: object) -> None:
    """Nothing to do: the inbox row written in this transaction is the effect."""


register(CONSUMER, PING, handle=ping)
