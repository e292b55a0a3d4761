"""The orders context's saga commands: confirm the order (the last, retriable step) and
cancel it (the compensation of creating it)."""

from dataclasses import dataclass
from typing import Any

from orders.services import order_cancel, order_confirm
from outbox.messages import Message
from sagas.participant import saga_participant

CONSUMER = "orders"


@dataclass(frozen=True)
class ConfirmOrder:
    order_id: int


@dataclass(frozen=True)
class CancelOrder:
    order_id: int
    reason: str = ""


def confirm(message: Message, _: object) -> dict[str, Any]:
    order = order_confirm(order_id=message.parse(ConfirmOrder).order_id)
    return {"order_status": order.status}


def cancel(message: Message, _: object) -> dict[str, Any]:
    command = message.parse(CancelOrder)
    order = order_cancel(order_id=command.order_id, reason=command.reason)
    return {"order_status": order.status}


saga_participant(CONSUMER, "confirm_order", handle=confirm)
saga_participant(CONSUMER, "cancel_order", handle=cancel)
