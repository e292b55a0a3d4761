"""The messages of the orders context: its saga commands, and the data of its replies."""

from dataclasses import dataclass
from typing import ClassVar

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
