"""The orders context's saga commands: confirm the order (the last, retriable step) and
cancel it (the compensation of creating it)."""

from django.conf import settings

from orders.contracts import CancelOrder, ConfirmOrder, OrderStatus
from orders.models import StepOutcome
from orders.services import order_cancel, order_confirm
from outbox.messages import Message
from sagas.outcomes import OutcomeBook
from sagas.participant import saga_participant

BOOK = OutcomeBook(StepOutcome)


def confirm(message: Message, _: object) -> OrderStatus:
    order = order_confirm(order_id=message.parse(ConfirmOrder).order_id)
    return OrderStatus(order_status=order.status)


def confirm_by_hand(message: Message, evidence: str) -> OrderStatus:
    """The operator confirmed the order and told the customer: no email from here."""
    order = order_confirm(order_id=message.parse(ConfirmOrder).order_id, told_by_hand=evidence or "by hand")
    return OrderStatus(order_status=order.status)


def cancel(message: Message, _: object) -> OrderStatus:
    """No notice for an order that was never charged (a declined card, a cancellation before the
    charge) unless the shop asks for one: anyone may place an order for any address, and a
    notice that costs them nothing would make the shop a mailer of their choosing."""
    command = message.parse(CancelOrder)
    notify = command.charged or settings.NOTIFY_UNCHARGED_CANCELLATIONS
    order = order_cancel(
        order_id=command.order_id, reason=command.reason, refunded_amount=command.refunded_amount, notify=notify
    )
    return OrderStatus(order_status=order.status)


def cancel_by_hand(message: Message, evidence: str) -> OrderStatus:
    command = message.parse(CancelOrder)
    order = order_cancel(order_id=command.order_id, reason=command.reason, told_by_hand=evidence or "by hand")
    return OrderStatus(order_status=order.status)


saga_participant(ConfirmOrder.channel, handle=confirm, book=BOOK, manual=confirm_by_hand)
saga_participant(CancelOrder.channel, handle=cancel, book=BOOK, manual=cancel_by_hand)
