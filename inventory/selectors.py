"""Reads of the inventory context (the catalog for order placement, the dashboard, the auditor)."""

from django.db.models import F, QuerySet

from inventory.models import Product, Reservation


def product_catalog(skus: list[str]) -> dict[str, Product]:
    return {p.sku: p for p in Product.objects.filter(sku__in=skus, active=True)}


def product_list() -> QuerySet[Product]:
    return (
        Product.objects.filter(active=True)
        .select_related("stock")
        .annotate(available=F("stock__on_hand") - F("stock__reserved"))
        .order_by("sku")
    )


def reservations_of_order(order_id: int) -> list[Reservation]:
    return list(Reservation.objects.filter(order_id=order_id).prefetch_related("lines__product"))
