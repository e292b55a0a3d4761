"""Writes of the orders context: placing an order (which starts its saga), cancelling it,
and the saga's confirm and cancel steps."""

import uuid
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from inventory.selectors import product_catalog
from orders.contracts import OrderCancelledV1, OrderConfirmedV1, OrderPlacedV1
from orders.exceptions import InvalidOrder, OrderNotCancellable
from orders.models import Notification, Order
from orders.notifications import greeting, notification_send
from orders.rows import NewLine, order_insert
from orders.saga import ORDER_SAGA, OrderSagaData
from outbox.events import occurred, publish_event
from sagas.definition import latest_definition
from sagas.exceptions import CancellationRefused
from sagas.models import SagaInstance
from sagas.orchestrator import saga_request_cancel, saga_start

MAX_LINES = 100
MAX_QUANTITY = 1000
# Amounts are PostgreSQL integers (minor units); a larger total would fail the insert.
MAX_TOTAL_AMOUNT = 2**31 - 1


@dataclass(frozen=True)
class LineInput:
    sku: str
    quantity: int


@dataclass(frozen=True)
class Customer:
    email: str
    name: str


@dataclass(frozen=True)
class Placement:
    """An order as the transaction placing it wrote it: the order with its lines, and the saga
    with its first step. Their first representation needs nothing read back."""

    order: Order
    saga: SagaInstance


def order_place(
    *,
    customer: Customer,
    lines: list[LineInput],
    payment_token: str,
    shipping_address: dict[str, Any],
    client: AbstractBaseUser | None = None,
    idempotency_key: str = "",
) -> Placement:
    """Create the order and start its saga in one transaction. Prices come from the catalog.
    Returns what it wrote (see Placement); ``.order`` is the order.

    Errors name the offending line (``lines.2.sku``), so that a client can fix its request.
    """
    errors: dict[str, list[str]] = {}
    if not lines:
        errors["lines"] = ["an order needs at least one line"]
    elif len(lines) > MAX_LINES:
        errors["lines"] = [f"at most {MAX_LINES} lines per order"]
    catalog = product_catalog([line.sku for line in lines])
    seen: set[str] = set()
    for index, line in enumerate(lines):
        if not 0 < line.quantity <= MAX_QUANTITY:
            errors.setdefault(f"lines.{index}.quantity", []).append(f"must be between 1 and {MAX_QUANTITY}")
        if line.sku in seen:
            errors.setdefault(f"lines.{index}.sku", []).append(f"{line.sku} appears twice; each sku at most once")
        elif line.sku not in catalog:
            errors.setdefault(f"lines.{index}.sku", []).append(f"unknown sku: {line.sku}")
        seen.add(line.sku)
    currencies = {product.currency for product in catalog.values()}
    if len(currencies) > 1:
        errors.setdefault("lines", []).append("all products of an order must share one currency")
    total = sum(catalog[line.sku].price_amount * line.quantity for line in lines if line.sku in catalog)
    if total > MAX_TOTAL_AMOUNT:
        errors.setdefault("lines", []).append(f"the order total exceeds {MAX_TOTAL_AMOUNT} minor units")
    elif total <= 0 and not errors:
        errors["lines"] = ["the order total must be above zero (only free products?)"]
    if errors:
        raise InvalidOrder(errors)

    currency = currencies.pop()
    saga_id = uuid.uuid4()
    # No savepoint of its own inside a caller's transaction (the API's, which completes the
    # idempotency key): a failure here fails the caller's transaction as a whole anyway.
    with transaction.atomic(savepoint=False):
        order = order_insert(
            client_id=client.pk if client is not None else None,
            customer_email=customer.email,
            customer_name=customer.name,
            shipping_address=shipping_address,
            total_amount=total,
            currency=currency,
            saga_id=saga_id,
            lines=[
                NewLine(
                    sku=line.sku,
                    name=catalog[line.sku].name,
                    quantity=line.quantity,
                    unit_price_amount=catalog[line.sku].price_amount,
                )
                for line in lines
            ],
        )
        publish_event(
            OrderPlacedV1(
                order_id=order.pk,
                saga_id=str(saga_id),
                total_amount=total,
                currency=currency,
                lines=[
                    {
                        "sku": line.sku,
                        "name": line.name,
                        "quantity": line.quantity,
                        "unit_price_amount": line.unit_price_amount,
                    }
                    for line in order.lines.all()
                ],
                occurred_at=occurred(order.created_at),
            ),
            aggregate="order",
            aggregate_id=order.pk,
            correlation_id=str(saga_id),  # the saga it starts, as for every later event of the order
        )
        saga = saga_start(
            # New orders start on the newest registered version; sagas in flight keep theirs.
            definition=latest_definition(ORDER_SAGA.name),
            saga_id=saga_id,
            aggregate="order",
            aggregate_id=order.pk,
            idempotency_key=idempotency_key,
            data=OrderSagaData(
                order_id=order.pk,
                saga_id=str(saga_id),
                amount=total,
                currency=currency,
                payment_token=payment_token,
                lines=[{"sku": line.sku, "quantity": line.quantity} for line in lines],
                shipping_address=shipping_address,
            ),
        )
    return Placement(order=order, saga=saga)


def order_request_cancel(*, order: Order, reason: str = "cancelled by the customer") -> Order:
    """Ask the saga to stop and compensate. Idempotent: a cancelled order stays cancelled."""
    if order.status == Order.Status.CANCELLED:
        return order
    if order.status == Order.Status.CONFIRMED:
        raise OrderNotCancellable("the order is already confirmed and can no longer be cancelled")
    try:
        saga_request_cancel(saga_id=order.saga_id, reason=reason)
    except CancellationRefused as exc:
        raise OrderNotCancellable(str(exc)) from exc
    order.refresh_from_db()
    return order


def order_confirm(*, order_id: int, told_by_hand: str = "") -> Order:
    """The saga's last step: confirm the order and email the customer, once. ``told_by_hand``:
    an operator confirmed it by hand and told the customer themselves (their evidence): the
    notice is recorded as theirs and no email is sent."""
    order = Order.objects.select_for_update().get(pk=order_id)
    if order.status == Order.Status.PENDING:
        order.status = Order.Status.CONFIRMED
        order.updated_at = timezone.now()
        order.save(update_fields=["status", "updated_at"])
        publish_event(
            OrderConfirmedV1(order_id=order.pk, saga_id=str(order.saga_id), occurred_at=occurred(order.updated_at)),
            aggregate="order",
            aggregate_id=order.pk,
        )
    if order.status == Order.Status.CONFIRMED:
        lines = "\n".join(f"  {line.quantity} x {line.name}" for line in order.lines.all())
        notification_send(
            order=order,
            kind=Notification.Kind.CONFIRMATION,
            body=f"{greeting(order.customer_name)}\n\nyour order {order.pk} is confirmed:\n{lines}\n",
            told_by_hand=told_by_hand,
        )
    return order


def order_cancel(
    *,
    order_id: int,
    reason: str,
    refunded_amount: int = 0,
    currency: str = "",
    told_by_hand: str = "",
    notify: bool = True,
) -> Order:
    """The compensation of creating the order: cancel it and tell the customer, once.
    ``told_by_hand``: an operator cancelled it by hand and told the customer themselves.
    ``notify`` False: no notice at all (an order never charged, see orders.handlers.cancel).

    The notice mentions money only when the caller names a refund that was made: a notice
    that claims a refund the gateway never made is the broken promise the auditor looks for
    (audit.checks, cancellation_refund_unmade), and "nothing was charged" may be false too."""
    order = Order.objects.select_for_update().get(pk=order_id)
    if order.status == Order.Status.PENDING:
        order.status = Order.Status.CANCELLED
        order.cancel_reason = reason or "cancelled"
        order.updated_at = timezone.now()
        order.save(update_fields=["status", "cancel_reason", "updated_at"])
        publish_event(
            OrderCancelledV1(
                order_id=order.pk,
                saga_id=str(order.saga_id),
                reason=order.cancel_reason,
                occurred_at=occurred(order.updated_at),
            ),
            aggregate="order",
            aggregate_id=order.pk,
        )
    if order.status == Order.Status.CANCELLED and notify:
        notification_send(
            order=order,
            kind=Notification.Kind.CANCELLATION,
            body=(
                f"{greeting(order.customer_name)}\n\nyour order {order.pk} was cancelled: {order.cancel_reason}.\n"
                + (
                    f"We refunded {_amount(refunded_amount)} {currency or order.currency}.\n"
                    if refunded_amount > 0
                    else ""
                )
            ),
            told_by_hand=told_by_hand,
        )
    return order


def _amount(minor_units: int) -> str:
    """Minor units as the customer reads them, for the two-decimal currencies we sell in."""
    return f"{minor_units // 100}.{minor_units % 100:02d}"
