from django.db import models
from django.db.models.functions import Now

from sagas.outcomes import StepOutcomeBase


class Shipment(models.Model):
    """A shipment keeps its row when cancelled: the status changes, the history stays."""

    class Status(models.TextChoices):
        CREATED = "created", "created"
        CANCELLED = "cancelled", "cancelled"
        DISPATCHED = "dispatched", "dispatched"

    id = models.BigAutoField(primary_key=True)
    order_id = models.BigIntegerField(db_index=True)
    idempotency_key = models.CharField(max_length=300, unique=True, help_text="the create step's key")
    # The saga step that made the row (None: made outside a saga). The auditor joins on these,
    # never on the text of the key.
    saga_id = models.UUIDField(null=True, blank=True, db_index=True)
    step = models.CharField(max_length=100, blank=True, default="", db_default="")
    status = models.CharField(max_length=10, choices=Status.choices)
    carrier_reference = models.CharField(max_length=100, blank=True)
    tracking_number = models.CharField(max_length=100, blank=True)
    address = models.JSONField(default=dict)
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())
    cancelled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        # The console's search finds a shipment by the tracking number a customer quotes.
        indexes = [models.Index(fields=["tracking_number"], name="shipment_tracking_number_idx")]

    def __str__(self) -> str:
        return f"shipment {self.pk} for order {self.order_id}: {self.status}"


class CarrierShipment(models.Model):
    """The fake carrier's own books, keyed by the caller's idempotency key."""

    id = models.BigAutoField(primary_key=True)
    idempotency_key = models.CharField(max_length=300, unique=True)
    reference = models.CharField(max_length=100, unique=True)
    tracking_number = models.CharField(max_length=100)
    accepted = models.BooleanField()
    error = models.CharField(max_length=200, blank=True)
    cancelled = models.BooleanField(default=False)
    created_at = models.DateTimeField(db_default=Now())

    def __str__(self) -> str:
        return f"carrier shipment {self.reference}"


class StepOutcome(StepOutcomeBase):
    """The final outcome of each saga step key the shipping context handled (sagas.outcomes)."""

    class Meta:
        verbose_name = "step outcome"
