"""Reads of the orders context. The order detail gathers what the other contexts know about
the order through their own selectors: each context owns its tables, and reads them itself."""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.db.models import QuerySet

from inventory.models import Reservation
from inventory.selectors import reservations_of_order
from orders.models import Order, OrderLine
from payments.selectors import PaymentSummary, payment_summary_of_order
from sagas.models import SagaInstance, SagaStep
from sagas.selectors import saga_with_timeline
from shipping.selectors import shipment_of_order

NOTHING_YET = "none"


@dataclass(frozen=True)
class Money:
    amount: int
    currency: str


@dataclass(frozen=True)
class CustomerDetail:
    email: str
    name: str


@dataclass(frozen=True)
class LineDetail:
    sku: str
    name: str
    quantity: int
    unit_price: Money
    total: Money


@dataclass(frozen=True)
class PaymentDetail:
    status: str
    amount_charged: Money
    amount_refunded: Money


@dataclass(frozen=True)
class ReservedLine:
    sku: str
    quantity: int


@dataclass(frozen=True)
class InventoryDetail:
    status: str
    lines: list[ReservedLine]


@dataclass(frozen=True)
class ShipmentDetail:
    status: str
    tracking_number: str


@dataclass(frozen=True)
class SagaDetail:
    id: str
    state: str
    current_step: str
    stuck: bool
    failure_reason: str
    timeline: list[SagaStep]


@dataclass(frozen=True)
class OrderDetail:
    id: int
    status: str
    cancel_requested: bool
    cancel_reason: str
    customer: CustomerDetail
    shipping_address: dict[str, Any]
    lines: list[LineDetail]
    total: Money
    payment: PaymentDetail
    inventory: InventoryDetail
    shipment: ShipmentDetail
    saga: SagaDetail | None
    created_at: datetime
    updated_at: datetime


def order_list(*, client: AbstractBaseUser, status: str | None = None) -> QuerySet[Order]:
    """The client's orders, newest first. Only the order's own columns: the list stays one
    query per page however many orders it shows."""
    orders = Order.objects.filter(client=client).order_by("-id")
    if status:
        orders = orders.filter(status=status)
    return orders


def order_get(*, client: AbstractBaseUser, order_id: int) -> Order | None:
    """The order if this client placed it. Another client's order is indistinguishable from
    one that does not exist."""
    return Order.objects.filter(client=client, pk=order_id).first()


def order_with_lines_and_notices(*, order_id: int | None) -> Order | None:
    """The order with its client, lines and notifications, for the operators' saga page."""
    if order_id is None:
        return None
    return Order.objects.select_related("client").prefetch_related("lines", "notifications").filter(pk=order_id).first()


def saga_ids_of_customer_email(*, fragment: str, limit: int) -> list:
    """The sagas of orders whose customer email contains ``fragment``, in any case, newest
    first. Served by the trigram index from three characters on; shorter fragments are not
    searched (they would match nearly every order)."""
    fragment = fragment.strip()
    if len(fragment) < 3:
        return []
    return list(
        Order.objects.filter(customer_email__icontains=fragment)
        .order_by("-id")
        .values_list("saga_id", flat=True)[:limit]
    )


@contextmanager
def read_snapshot() -> Iterator[None]:
    """Run the reads inside in one REPEATABLE READ, read-only transaction: they all see the
    database at one moment. Each query otherwise sees it as of its own start, and an order read
    just before its saga finished would show as pending beside a saga already compensated.
    Inside a caller's transaction, the reads are the caller's."""
    if connection.in_atomic_block:
        yield
        return
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield


def order_detail(*, order: Order, placed_saga: SagaInstance | None = None) -> OrderDetail:
    """Everything the client may know about its order. Read the order and its detail in one
    read_snapshot(), or they may disagree.

    ``placed_saga``: the saga that order_place() just started, in the transaction that
    creates the order. No other context can have seen the order yet (its first command leaves
    only after the commit), and the order's lines and the saga's step log are known as written,
    so nothing is read: the answer is the same, and order placement eight queries cheaper.
    """
    currency = order.currency
    saga = placed_saga or saga_with_timeline(saga_id=order.saga_id)
    if placed_saga is not None:
        payment = PaymentSummary(status=NOTHING_YET, amount_charged=0, amount_refunded=0)
        reservations: list[Reservation] = []
        shipment = ShipmentDetail(status=NOTHING_YET, tracking_number="")
    else:
        payment = payment_summary_of_order(order_id=order.pk)
        reservations = reservations_of_order(order.pk)
        shipment = _shipment_detail(order.pk)
    return OrderDetail(
        id=order.pk,
        status=order.status,
        cancel_requested=saga is not None and saga.cancel_requested,
        cancel_reason=order.cancel_reason,
        customer=CustomerDetail(email=order.customer_email, name=order.customer_name),
        shipping_address=order.shipping_address,
        lines=[_line_detail(line) for line in order.lines.all()],
        total=Money(order.total_amount, currency),
        payment=_payment_detail(payment, currency),
        inventory=_inventory_detail(reservations),
        shipment=shipment,
        saga=_saga_detail(saga),
        created_at=order.created_at,
        updated_at=order.updated_at,
    )


def _line_detail(line: OrderLine) -> LineDetail:
    return LineDetail(
        sku=line.sku,
        name=line.name,
        quantity=line.quantity,
        unit_price=Money(line.unit_price_amount, line.currency),
        total=Money(line.total_amount, line.currency),
    )


def _payment_detail(summary: PaymentSummary, currency: str) -> PaymentDetail:
    return PaymentDetail(
        status=summary.status,
        amount_charged=Money(summary.amount_charged, currency),
        amount_refunded=Money(summary.amount_refunded, currency),
    )


def _inventory_detail(reservations: list[Reservation]) -> InventoryDetail:
    if not reservations:
        return InventoryDetail(status=NOTHING_YET, lines=[])
    # One reservation per order and step key; the latest is the one that counts.
    latest = max(reservations, key=lambda reservation: reservation.pk)
    lines = sorted(
        (ReservedLine(sku=line.product.sku, quantity=line.quantity) for line in latest.lines.all()),
        key=lambda line: line.sku,
    )
    return InventoryDetail(status=latest.status, lines=lines)


def _shipment_detail(order_id: int) -> ShipmentDetail:
    shipment = shipment_of_order(order_id=order_id)
    if shipment is None:
        return ShipmentDetail(status=NOTHING_YET, tracking_number="")
    return ShipmentDetail(status=shipment.status, tracking_number=shipment.tracking_number)


def _saga_detail(saga: SagaInstance | None) -> SagaDetail | None:
    if saga is None:
        return None
    return SagaDetail(
        id=str(saga.id),
        state=saga.state,
        current_step=saga.current_step,
        stuck=saga.stuck,
        failure_reason=saga.failure_reason,
        timeline=list(saga.steps.all()),
    )
