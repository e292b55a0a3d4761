from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Now

from sagas.outcomes import StepOutcomeBase


class Product(models.Model):
    sku = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    price_amount = models.PositiveIntegerField(help_text="in minor units (cents)")
    currency = models.CharField(max_length=3, default="EUR")
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["sku"]
        constraints = [models.CheckConstraint(condition=Q(currency__regex=r"^[A-Z]{3}$"), name="product_currency_iso")]

    def __str__(self) -> str:
        return f"{self.sku} {self.name}"


class StockLevel(models.Model):
    """Stock of one product. Available = on hand - reserved, never negative (checked by PostgreSQL)."""

    product = models.OneToOneField(Product, on_delete=models.PROTECT, related_name="stock", primary_key=True)
    on_hand = models.IntegerField(default=0)
    reserved = models.IntegerField(default=0)
    updated_at = models.DateTimeField(db_default=Now())

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(reserved__gte=0), name="stock_reserved_not_negative"),
            models.CheckConstraint(condition=Q(on_hand__gte=F("reserved")), name="stock_available_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.product_id}: {self.on_hand} on hand, {self.reserved} reserved"

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved


class Reservation(models.Model):
    class Status(models.TextChoices):
        RESERVED = "reserved", "reserved"
        RELEASED = "released", "released"

    id = models.BigAutoField(primary_key=True)
    order_id = models.BigIntegerField(db_index=True)
    idempotency_key = models.CharField(max_length=300, unique=True)
    # The saga step that made the row (None: made outside a saga). The auditor joins on these,
    # never on the text of the key.
    saga_id = models.UUIDField(null=True, blank=True, db_index=True)
    step = models.CharField(max_length=100, blank=True, default="", db_default="")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RESERVED)
    created_at = models.DateTimeField(db_default=Now())
    released_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"reservation {self.pk} for order {self.order_id} ({self.status})"


class ReservationLine(models.Model):
    reservation = models.ForeignKey(Reservation, on_delete=models.PROTECT, related_name="lines")
    product = models.ForeignKey(Product, on_delete=models.PROTECT)
    quantity = models.PositiveIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["reservation", "product"], name="reservationline_product_unique"),
            models.CheckConstraint(condition=Q(quantity__gt=0), name="reservationline_quantity_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.quantity} of {self.product_id}"


class StockMovement(models.Model):
    """Append-only ledger of stock: receipts add to on hand, reservations and releases move
    the reserved count. Never updated or deleted (a database trigger refuses it)."""

    class Kind(models.TextChoices):
        RECEIPT = "receipt", "receipt"
        RESERVE = "reserve", "reserve"
        RELEASE = "release", "release"

    id = models.BigAutoField(primary_key=True)
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="movements")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    quantity = models.PositiveIntegerField()
    reservation = models.ForeignKey(Reservation, null=True, blank=True, on_delete=models.PROTECT)
    idempotency_key = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=Q(quantity__gt=0), name="stockmovement_quantity_positive"),
            models.UniqueConstraint(
                fields=["product", "kind", "reservation"],
                condition=Q(reservation__isnull=False),
                name="stockmovement_once_per_reservation",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.quantity} of {self.product_id}"


class StepOutcome(StepOutcomeBase):
    """The final outcome of each saga step key the inventory context handled (sagas.outcomes)."""

    class Meta:
        verbose_name = "step outcome"
