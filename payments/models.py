from django.db import models
from django.db.models import Q
from django.db.models.functions import Now

from sagas.outcomes import StepOutcomeBase


class Payment(models.Model):
    """Our record of one order's payment. Money moves only as ledger entries."""

    class Status(models.TextChoices):
        CHARGED = "charged", "charged"
        REFUNDED = "refunded", "refunded"
        VOIDED = "voided", "voided (compensated before any charge)"

    id = models.BigAutoField(primary_key=True)
    order_id = models.BigIntegerField(db_index=True)
    idempotency_key = models.CharField(max_length=300, unique=True, help_text="the charge step's key")
    # The saga step that made the row (None: made outside a saga). The auditor joins on these,
    # never on the text of the key.
    saga_id = models.UUIDField(null=True, blank=True, db_index=True)
    step = models.CharField(max_length=100, blank=True, default="", db_default="")
    provider_charge_id = models.CharField(max_length=100, blank=True)
    amount = models.PositiveIntegerField(help_text="in minor units")
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=10, choices=Status.choices)
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())

    def __str__(self) -> str:
        return f"payment {self.pk} for order {self.order_id}: {self.status}"

    @property
    def refunded_amount(self) -> int:
        """A refund always gives back the whole charge."""
        return self.amount if self.status == self.Status.REFUNDED else 0


class LedgerEntry(models.Model):
    """Append-only money ledger: a refund is a new entry, never an edit. A database trigger
    refuses UPDATE and DELETE on this table."""

    class Kind(models.TextChoices):
        CHARGE = "charge", "charge"
        REFUND = "refund", "refund"

    id = models.BigAutoField(primary_key=True)
    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, related_name="entries")
    order_id = models.BigIntegerField(db_index=True)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    amount = models.PositiveIntegerField()
    currency = models.CharField(max_length=3)
    idempotency_key = models.CharField(max_length=300, unique=True)
    provider_reference = models.CharField(max_length=100)
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["id"]
        verbose_name_plural = "ledger entries"
        # The auditor finds the gateway's movement a ledger entry books by its reference.
        indexes = [models.Index(fields=["provider_reference"], name="ledger_provider_reference_idx")]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="ledger_amount_positive"),
            models.UniqueConstraint(fields=["payment", "kind"], name="ledger_one_charge_one_refund_per_payment"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount} {self.currency} (order {self.order_id})"


class GatewayCharge(models.Model):
    """The fake gateway's own books, standing in for the provider's side (as Stripe keeps its
    own). Keyed by the caller's idempotency key: the same key returns the same result."""

    class Kind(models.TextChoices):
        CHARGE = "charge", "charge"
        REFUND = "refund", "refund"

    id = models.BigAutoField(primary_key=True)
    idempotency_key = models.CharField(max_length=300, unique=True)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    transaction_id = models.CharField(max_length=100, unique=True)
    charge_transaction_id = models.CharField(
        max_length=100, blank=True, db_index=True, help_text="for a refund: the refunds of a charge are found by it"
    )
    amount = models.PositiveIntegerField()
    currency = models.CharField(max_length=3)
    token = models.CharField(max_length=100, blank=True)
    succeeded = models.BooleanField()
    error = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(db_default=Now())

    def __str__(self) -> str:
        return f"gateway {self.kind} {self.transaction_id}"


class StepOutcome(StepOutcomeBase):
    """The final outcome of each saga step key the payments context handled (sagas.outcomes)."""

    class Meta:
        verbose_name = "step outcome"
