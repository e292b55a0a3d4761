"""The messages of the orders context: its saga commands, and the data of its replies."""

from dataclasses import dataclass
from typing import Any, ClassVar

from outbox.events import integration_event
from outbox.messages import Channel
from sagas.messages import SAGA_REPLY

CONSUMER = "orders"


@dataclass(frozen=True)
class ConfirmOrder:
    channel: ClassVar[Channel] = Channel(CONSUMER, "confirm_order")
    order_id: int


@dataclass(frozen=True)
class CancelOrder:
    channel: ClassVar[Channel] = Channel(CONSUMER, "cancel_order")
    order_id: int
    reason: str = ""
    refunded_amount: int = 0  # what the saga's refund gave back, for the customer's notice
    charged: bool = True  # a command sent before the field existed: notify, as then


@dataclass(frozen=True)
class OrderStatus:
    """The reply to confirm_order and cancel_order: the order's status after it."""

    channel: ClassVar[Channel] = SAGA_REPLY
    order_status: str


# Integration events: facts for consumers outside the system (outbox.events), keyed by the order.


@integration_event(
    "order.placed",
    1,
    example={
        "order_id": 1042,
        "saga_id": "4f6c1f9e-2d4b-4c1e-9a57-0d3e5b1c7a21",
        "total_amount": 1497,
        "currency": "EUR",
        "lines": [{"sku": "MUG-1", "name": "Mug", "quantity": 3, "unit_price_amount": 499}],
        "occurred_at": "2026-12-01T09:30:00.123456+00:00",
    },
)
@dataclass(frozen=True)
class OrderPlacedV1:
    """An order was placed: its lines at the prices it was placed at, its total in minor units.
    Its saga starts in the same transaction."""

    order_id: int
    saga_id: str
    total_amount: int
    currency: str
    lines: list[dict[str, Any]]
    occurred_at: str


@integration_event(
    "order.confirmed",
    1,
    example={
        "order_id": 1042,
        "saga_id": "4f6c1f9e-2d4b-4c1e-9a57-0d3e5b1c7a21",
        "occurred_at": "2026-12-01T09:30:00.123456+00:00",
    },
)
@dataclass(frozen=True)
class OrderConfirmedV1:
    """The order was confirmed: paid, stock reserved, shipment booked; its confirmation is sent."""

    order_id: int
    saga_id: str
    occurred_at: str


@integration_event(
    "order.cancelled",
    1,
    example={
        "order_id": 1042,
        "saga_id": "4f6c1f9e-2d4b-4c1e-9a57-0d3e5b1c7a21",
        "reason": "payment declined: card_declined",
        "occurred_at": "2026-12-01T09:30:00.123456+00:00",
    },
)
@dataclass(frozen=True)
class OrderCancelledV1:
    """The order was cancelled, with the reason its saga was compensated for (a declined
    payment, no stock, an address the carrier does not serve, the customer's request)."""

    order_id: int
    saga_id: str
    reason: str
    occurred_at: str
