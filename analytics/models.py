"""The analytics read model: the order stream folded into figures per day.

Every row belongs to one generation, a build of the read model with its own position on the
stream. The live consumer folds new events into the active generation; ``analytics_rebuild``
folds the stream from its first retained event into a new generation and makes it the active one
when it has caught up, in one transaction. Readers (analytics.selectors) see the active
generation only, so a rebuild never shows half-built figures.

These tables are written by the analytics consumer only, from events: nothing here reads or
joins another context's tables.
"""

from django.db import models
from django.db.models import Q
from django.db.models.functions import Now


class Generation(models.Model):
    """A build of the read model and its position on the stream, stored in the transaction of
    each fold: what is in the tables is exactly the events before ``next_offset``."""

    class Status(models.TextChoices):
        BUILDING = "building", "building"
        ACTIVE = "active", "active"
        RETIRED = "retired", "retired"

    id = models.BigAutoField(primary_key=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.BUILDING)
    stream = models.CharField(max_length=200, help_text="the stream it folds")
    next_offset = models.BigIntegerField(default=0, help_text="the first stream offset not folded yet")
    events_folded = models.BigIntegerField(default=0)
    duplicates_ignored = models.BigIntegerField(default=0)
    events_rejected = models.BigIntegerField(default=0, help_text="not authentic, unknown or malformed")
    last_event_at = models.DateTimeField(null=True, blank=True, help_text="when the last folded event was written")
    tail_offset = models.BigIntegerField(null=True, blank=True, help_text="the stream's last offset, as last seen")
    tail_seen_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(db_default=Now())
    activated_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(db_default=Now())

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["status"], condition=Q(status="active"), name="analytics_one_active")
        ]

    def __str__(self) -> str:
        return f"generation {self.pk} ({self.status}, at offset {self.next_offset})"


class FoldedEvent(models.Model):
    """An event folded into a generation: a second copy of it on the stream changes nothing.
    ``written_at`` (the outbox row's time) and ``folded_at`` give the consumer's lag."""

    id = models.BigAutoField(primary_key=True)
    generation = models.ForeignKey(Generation, on_delete=models.CASCADE, related_name="+")
    event_id = models.UUIDField()
    offset = models.BigIntegerField()
    type = models.CharField(max_length=100)
    written_at = models.DateTimeField()
    folded_at = models.DateTimeField(db_default=Now())

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["generation", "event_id"], name="analytics_event_once_per_generation")
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id} at offset {self.offset}"


class OrderFact(models.Model):
    """One order as its events told it: what a later event of the order needs (its lines for
    the revenue per product, its placement time for the fulfilment time)."""

    id = models.BigAutoField(primary_key=True)
    generation = models.ForeignKey(Generation, on_delete=models.CASCADE, related_name="+")
    order_id = models.BigIntegerField()
    saga_id = models.CharField(max_length=64, blank=True)
    placed_at = models.DateTimeField(null=True, blank=True)
    total_amount = models.BigIntegerField(default=0)
    currency = models.CharField(max_length=3, blank=True)
    lines = models.JSONField(default=list)
    captured_amount = models.BigIntegerField(default=0)
    refunded_amount = models.BigIntegerField(default=0)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    cancel_reason = models.TextField(blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["generation", "order_id"], name="analytics_order_once")]

    def __str__(self) -> str:
        return f"order {self.order_id}"


class DailySales(models.Model):
    """Per day (UTC) and currency: orders placed, confirmed and cancelled that day, money
    captured and refunded that day (net revenue = captured - refunded)."""

    id = models.BigAutoField(primary_key=True)
    generation = models.ForeignKey(Generation, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    currency = models.CharField(max_length=3)
    orders_placed = models.IntegerField(default=0)
    orders_confirmed = models.IntegerField(default=0)
    orders_cancelled = models.IntegerField(default=0)
    captured_amount = models.BigIntegerField(default=0)
    refunded_amount = models.BigIntegerField(default=0)
    refunds = models.IntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["generation", "day", "currency"], name="analytics_sales_once_per_day")
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.currency}"


class ProductDaily(models.Model):
    """Per day, product and currency: units and revenue, net of refunds (a capture adds the
    order's lines on its day, a refund takes them away on its day)."""

    id = models.BigAutoField(primary_key=True)
    generation = models.ForeignKey(Generation, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    sku = models.CharField(max_length=64)
    currency = models.CharField(max_length=3)
    units = models.IntegerField(default=0)
    revenue_amount = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["generation", "day", "sku", "currency"], name="analytics_product_once_per_day"
            )
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.sku}"


class CancellationDaily(models.Model):
    """Per day and reason: orders cancelled."""

    id = models.BigAutoField(primary_key=True)
    generation = models.ForeignKey(Generation, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    reason = models.TextField()
    orders = models.IntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["generation", "day", "reason"], name="analytics_reason_once_per_day")
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.reason}"


class Fulfilment(models.Model):
    """One confirmed order's time from placement to confirmation, on its confirmation's day:
    the percentiles per day are computed from these."""

    id = models.BigAutoField(primary_key=True)
    generation = models.ForeignKey(Generation, on_delete=models.CASCADE, related_name="+")
    order_id = models.BigIntegerField()
    day = models.DateField()
    seconds = models.FloatField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["generation", "order_id"], name="analytics_fulfilment_once")]
        indexes = [models.Index(fields=["generation", "day"], name="analytics_fulfilment_day_idx")]

    def __str__(self) -> str:
        return f"order {self.order_id}: {self.seconds:.1f} s"
