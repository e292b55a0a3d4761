"""Writes of the inventory context: receiving, reserving and releasing stock."""

from dataclasses import dataclass

from django.db import transaction
from django.db.models.functions import Now
from django.utils import timezone

from inventory.contracts import StockReleasedV1, StockReservedV1
from inventory.exceptions import OutOfStock, ReservationRefused
from inventory.locks import lock_stock, lock_stock_of_skus
from inventory.models import Product, Reservation, ReservationLine, StockLevel, StockMovement
from outbox.events import occurred, publish_event


@dataclass(frozen=True)
class LineRequest:
    sku: str
    quantity: int


def product_upsert(*, sku: str, name: str, price_amount: int, currency: str = "EUR") -> Product:
    with transaction.atomic():
        product, _ = Product.objects.update_or_create(
            sku=sku, defaults={"name": name, "price_amount": price_amount, "currency": currency}
        )
        StockLevel.objects.get_or_create(product=product)
    return product


# Stock levels and movements are PostgreSQL integers.
MAX_UNITS = 2**31 - 1


def stock_receive(*, product: Product, quantity: int, idempotency_key: str = "") -> StockLevel:
    """Add received goods to stock, as a receipt movement."""
    if quantity <= 0:
        raise ValueError("a receipt adds at least one unit")
    with transaction.atomic():
        stock = lock_stock([product.pk])[product.pk]
        if stock.on_hand + quantity > MAX_UNITS:
            raise ValueError(f"{product.sku} would hold more than {MAX_UNITS} units on hand")
        stock.on_hand += quantity
        stock.updated_at = timezone.now()
        stock.save(update_fields=["on_hand", "updated_at"])
        StockMovement.objects.create(
            product=product, kind=StockMovement.Kind.RECEIPT, quantity=quantity, idempotency_key=idempotency_key
        )
    return stock


def stock_reserve(
    *, order_id: int, idempotency_key: str, lines: list[LineRequest], saga_id: str | None = None, step: str = ""
) -> Reservation:
    """Reserve every line or none. Idempotent by key: a repeated command returns the same
    reservation (or the tombstone a release left), never reserving twice. ``saga_id`` and
    ``step``: the saga step that reserves (as on every reservation a step makes)."""
    existing = Reservation.objects.filter(idempotency_key=idempotency_key).first()
    if existing is not None:
        return existing
    stock = lock_stock_of_skus(sorted({line.sku for line in lines}))
    unknown = sorted({line.sku for line in lines} - set(stock))
    if unknown:
        raise ReservationRefused(f"unknown product: {', '.join(unknown)}")
    wanted: dict[str, int] = {}
    for line in lines:
        wanted[line.sku] = wanted.get(line.sku, 0) + line.quantity
    short = [
        f"{sku} (wanted {wanted[sku]}, available {stock[sku].available})"
        for sku in sorted(wanted)
        if stock[sku].available < wanted[sku]
    ]
    if short:
        raise OutOfStock(f"out of stock: {'; '.join(short)}")
    reservation = Reservation.objects.create(
        order_id=order_id, idempotency_key=idempotency_key, saga_id=saga_id, step=step
    )
    publish_event(
        StockReservedV1(
            order_id=order_id,
            saga_id=str(saga_id or ""),
            reservation_id=reservation.pk,
            lines=[{"sku": sku, "quantity": quantity} for sku, quantity in wanted.items()],
            occurred_at=occurred(reservation.created_at),
        ),
        aggregate="order",
        aggregate_id=order_id,
    )
    for sku, quantity in wanted.items():
        level = stock[sku]
        ReservationLine.objects.create(reservation=reservation, product_id=level.product_id, quantity=quantity)
        StockMovement.objects.create(
            product_id=level.product_id,
            kind=StockMovement.Kind.RESERVE,
            quantity=quantity,
            reservation=reservation,
            idempotency_key=idempotency_key,
        )
        level.reserved += quantity
        level.updated_at = timezone.now()
        level.save(update_fields=["reserved", "updated_at"])
    return reservation


def stock_reserve_by_hand(
    *, order_id: int, idempotency_key: str, evidence: str, saga_id: str | None = None, step: str = ""
) -> Reservation:
    """Record that the goods were set aside outside the system (e.g. from another warehouse):
    a reservation without lines, which moves none of our stock, so releasing it moves none."""
    reservation, _ = Reservation.objects.get_or_create(
        idempotency_key=idempotency_key,
        defaults={"order_id": order_id, "saga_id": saga_id, "step": step, "status": Reservation.Status.RESERVED},
    )
    return reservation


def stock_release(
    *, order_id: int, reservation_key: str, idempotency_key: str, saga_id: str | None = None, step: str = ""
) -> Reservation:
    """Release a reservation, as new release movements. With nothing reserved yet, leave a
    released tombstone under the reservation's key, so a late reserve command cannot reserve
    stock for an order that was already compensated."""
    Reservation.objects.get_or_create(
        idempotency_key=reservation_key,
        defaults={
            "order_id": order_id,
            "saga_id": saga_id,
            "step": step,
            "status": Reservation.Status.RELEASED,
            "released_at": Now(),
        },
    )
    reservation = Reservation.objects.select_for_update().get(idempotency_key=reservation_key)
    if reservation.status == Reservation.Status.RELEASED:
        return reservation
    lines = list(reservation.lines.select_related("product"))
    stock = lock_stock(sorted(line.product_id for line in lines))
    for line in lines:
        StockMovement.objects.create(
            product_id=line.product_id,
            kind=StockMovement.Kind.RELEASE,
            quantity=line.quantity,
            reservation=reservation,
            idempotency_key=idempotency_key,
        )
        level = stock[line.product_id]
        level.reserved -= line.quantity
        level.updated_at = timezone.now()
        level.save(update_fields=["reserved", "updated_at"])
    reservation.status = Reservation.Status.RELEASED
    reservation.released_at = timezone.now()
    reservation.save(update_fields=["status", "released_at"])
    if lines:
        publish_event(
            StockReleasedV1(
                order_id=reservation.order_id,
                saga_id=str(reservation.saga_id or saga_id or ""),
                reservation_id=reservation.pk,
                lines=[{"sku": line.product.sku, "quantity": line.quantity} for line in lines],
                occurred_at=occurred(reservation.released_at),
            ),
            aggregate="order",
            aggregate_id=reservation.order_id,
        )
    return reservation
