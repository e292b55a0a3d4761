"""The messages of the inventory context: its commands, and the data of its replies."""

from dataclasses import dataclass
from typing import Any, ClassVar

from outbox.messages import Channel
from sagas.messages import SAGA_REPLY

CONSUMER = "inventory"


@dataclass(frozen=True)
class ReserveStock:
    channel: ClassVar[Channel] = Channel(CONSUMER, "reserve_stock")
    order_id: int
    lines: list[dict[str, Any]]  # {"sku": ..., "quantity": ...}


@dataclass(frozen=True)
class ReleaseStock:
    """Undo a reservation: ``reservation_key`` is the reserve step's key."""

    channel: ClassVar[Channel] = Channel(CONSUMER, "release_stock")
    order_id: int
    reservation_key: str


@dataclass(frozen=True)
class Reserved:
    channel: ClassVar[Channel] = SAGA_REPLY
    reservation_id: int


@dataclass(frozen=True)
class Released:
    channel: ClassVar[Channel] = SAGA_REPLY
    released_reservation_id: int
