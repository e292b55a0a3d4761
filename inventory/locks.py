"""Stock rows are locked in primary-key order, so two orders for the same products can
never deadlock however their lines are ordered."""

from inventory.models import StockLevel


def lock_stock(product_ids: list[int]) -> dict[int, StockLevel]:
    rows = StockLevel.objects.select_for_update().filter(product_id__in=product_ids).order_by("pk")
    return {row.product_id: row for row in rows}


def lock_stock_of_skus(skus: list[str]) -> dict[str, StockLevel]:
    """The stock rows of these products by sku, with their products, locked in one statement."""
    rows = (
        StockLevel.objects.select_for_update(of=("self",))
        .select_related("product")
        .filter(product__sku__in=skus)
        .order_by("pk")
    )
    return {row.product.sku: row for row in rows}
