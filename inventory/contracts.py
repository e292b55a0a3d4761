"""The messages of the inventory context: its commands, and the data of its replies."""

from dataclasses import dataclass
from typing import Any, ClassVar

from outbox.events import integration_event
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


# Integration events: facts for consumers outside the system (outbox.events), keyed by the order.


@integration_event(
    "stock.reserved",
    1,
    example={
        "order_id": 1042,
        "saga_id": "4f6c1f9e-2d4b-4c1e-9a57-0d3e5b1c7a21",
        "reservation_id": 315,
        "lines": [{"sku": "MUG-1", "quantity": 3}],
        "occurred_at": "2026-12-01T09:30:00.123456+00:00",
    },
)
@dataclass(frozen=True)
class StockReservedV1:
    """Stock was set aside for an order, every line or none."""

    order_id: int
    saga_id: str
    reservation_id: int
    lines: list[dict[str, Any]]
    occurred_at: str


@integration_event(
    "stock.released",
    1,
    example={
        "order_id": 1042,
        "saga_id": "4f6c1f9e-2d4b-4c1e-9a57-0d3e5b1c7a21",
        "reservation_id": 315,
        "lines": [{"sku": "MUG-1", "quantity": 3}],
        "occurred_at": "2026-12-01T09:30:00.123456+00:00",
    },
)
@dataclass(frozen=True)
class StockReleasedV1:
    """A reservation was released (the order's saga was compensated): its stock is available again."""

    order_id: int
    saga_id: str
    reservation_id: int
    lines: list[dict[str, Any]]
    occurred_at: str
