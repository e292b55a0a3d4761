"""Reads of the inventory context (the catalog for order placement, the dashboard, the auditor)."""

from django.db import connection
from django.db.models import F, QuerySet

from common.rows import instances_of_cursor, select_columns
from inventory.models import Product, Reservation, StockMovement
from sagas.selectors import KeyRecord

# Every order placement reads the catalog: one statement prepared once, not a query compiled anew.
_CATALOG_SQL = f"SELECT {select_columns(Product)} FROM inventory_product WHERE sku = ANY(%s::varchar[]) AND active"


def product_catalog(skus: list[str]) -> dict[str, Product]:
    """The active products of these skus, by sku (an unknown or inactive sku is missing)."""
    with connection.cursor() as cursor:
        cursor.execute(_CATALOG_SQL, [list(skus)])
        products = instances_of_cursor(Product, cursor)
    return {product.sku: product for product in products}


def product_list() -> QuerySet[Product]:
    return (
        Product.objects.filter(active=True)
        .select_related("stock")
        .annotate(available=F("stock__on_hand") - F("stock__reserved"))
        .order_by("sku")
    )


def reservations_of_order(order_id: int) -> list[Reservation]:
    return list(Reservation.objects.filter(order_id=order_id).prefetch_related("lines__product"))


def movements_of_reservations(reservation_ids: list[int]) -> list[StockMovement]:
    return list(StockMovement.objects.filter(reservation__in=reservation_ids).select_related("product").order_by("id"))


def records_of_step_keys(step_keys: list[str]) -> list[KeyRecord]:
    """What the steps' keys led to here: reservations."""
    return [
        KeyRecord(
            reservation.idempotency_key,
            "reservation",
            reservation.idempotency_key,
            f"#{reservation.pk} {reservation.status}",
        )
        for reservation in Reservation.objects.filter(idempotency_key__in=step_keys).order_by("id")
    ]
