from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now


class Order(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "pending"
        CONFIRMED = "confirmed", "confirmed"
        CANCELLED = "cancelled", "cancelled"

    id = models.BigAutoField(primary_key=True)
    client = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="orders"
    )
    customer_email = models.EmailField()
    customer_name = models.CharField(max_length=200)
    shipping_address = models.JSONField()
    total_amount = models.PositiveIntegerField(help_text="in minor units")
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    cancel_reason = models.TextField(blank=True)
    saga_id = models.UUIDField(unique=True)
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())

    class Meta:
        indexes = [
            models.Index(fields=["client", "-id"], name="order_client_idx"),
            models.Index(fields=["status", "-id"], name="order_status_idx"),
            models.Index(fields=["updated_at"], name="order_updated_idx"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(total_amount__gt=0), name="order_total_positive"),
        ]

    def __str__(self) -> str:
        return f"order {self.pk} ({self.status})"


class OrderLine(models.Model):
    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="lines")
    sku = models.CharField(max_length=64)
    name = models.CharField(max_length=200)
    quantity = models.PositiveIntegerField()
    unit_price_amount = models.PositiveIntegerField(help_text="copied from the catalog when ordered")
    currency = models.CharField(max_length=3)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["order", "sku"], name="orderline_sku_once_per_order"),
            models.CheckConstraint(condition=Q(quantity__gt=0), name="orderline_quantity_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.quantity} x {self.sku}"

    @property
    def total_amount(self) -> int:
        return self.quantity * self.unit_price_amount


class Notification(models.Model):
    """A customer email, sent at most once per order and kind (the unique row guarantees it)."""

    class Kind(models.TextChoices):
        CONFIRMATION = "confirmation", "order confirmation"
        CANCELLATION = "cancellation", "cancellation notice"

    id = models.BigAutoField(primary_key=True)
    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="notifications")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    recipient = models.EmailField()
    subject = models.CharField(max_length=200)
    sent_at = models.DateTimeField(db_default=Now())

    class Meta:
        constraints = [models.UniqueConstraint(fields=["order", "kind"], name="notification_once_per_kind")]

    def __str__(self) -> str:
        return f"{self.kind} for order {self.order_id}"
