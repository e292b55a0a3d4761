from django.conf import settings
from django.contrib.postgres.indexes import GinIndex, OpClass
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now, Upper

from sagas.outcomes import StepOutcomeBase


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
            # The console's search by a fragment of the customer's email, in any case: icontains
            # compares UPPER(email), which this trigram index serves.
            GinIndex(OpClass(Upper("customer_email"), name="gin_trgm_ops"), name="order_customer_email_trgm_idx"),
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
    """A customer email, sent at most once per order and kind (the unique row guarantees it).
    Its body is kept as sent, so that what the customer was told (e.g. that a refund was made)
    can be checked against the books."""

    class Kind(models.TextChoices):
        CONFIRMATION = "confirmation", "order confirmation"
        CANCELLATION = "cancellation", "cancellation notice"

    id = models.BigAutoField(primary_key=True)
    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="notifications")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    recipient = models.EmailField()
    subject = models.CharField(max_length=200)
    body = models.TextField(blank=True, db_default="")
    sent_at = models.DateTimeField(db_default=Now())

    class Meta:
        constraints = [models.UniqueConstraint(fields=["order", "kind"], name="notification_once_per_kind")]

    def __str__(self) -> str:
        return f"{self.kind} for order {self.order_id}"


class IdempotencyKey(models.Model):
    """A storefront client's Idempotency-Key and the response its first request got.

    Keys are scoped per client. A key is claimed (``in_flight``) in its own committed insert,
    so a concurrent duplicate sees it at once and is told to retry; it becomes ``completed``
    in the very transaction that creates the order, so a completed key always has its order
    and an order placed through the API always has its completed key. A request that fails
    deletes its claim, leaving the key free for a corrected retry.
    """

    class State(models.TextChoices):
        IN_FLIGHT = "in_flight", "in flight"
        COMPLETED = "completed", "completed"

    id = models.BigAutoField(primary_key=True)
    client = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="idempotency_keys")
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64, help_text="sha256 of method, path and body")
    method = models.CharField(max_length=10)
    path = models.CharField(max_length=255)
    state = models.CharField(max_length=10, choices=State.choices, default=State.IN_FLIGHT)
    lock_token = models.UUIDField(help_text="identifies the request that holds the claim")
    locked_at = models.DateTimeField(
        db_default=Now(), help_text="when the claim was taken (database clock); a stale claim may be taken over"
    )
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_headers = models.JSONField(default=dict, blank=True)
    response_body = models.BinaryField(default=b"", blank=True)
    order = models.ForeignKey(Order, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(db_default=Now())
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["client", "key"], name="idempotencykey_client_key_unique"),
            models.CheckConstraint(
                condition=Q(state="in_flight") | Q(response_status__isnull=False, order__isnull=False),
                name="idempotencykey_completed_has_response_and_order",
            ),
        ]
        indexes = [models.Index(fields=["created_at"], name="idempotencykey_created_idx")]

    def __str__(self) -> str:
        return f"{self.key} ({self.state})"


class StepOutcome(StepOutcomeBase):
    """The final outcome of each saga step key the orders context handled (sagas.outcomes)."""

    class Meta:
        verbose_name = "step outcome"
