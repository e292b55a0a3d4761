"""What the consistency auditor found, and when it last looked.

The auditor reads every context and writes only these two tables.
"""

from django.db import models
from django.db.models import Q


class Violation(models.Model):
    """One broken invariant on one set of objects, kept until a later run finds it repaired.

    ``(kind, key)`` is unique: finding the same problem again moves ``last_seen`` rather than
    adding a row, so the table holds one row per problem however often it is seen. A problem
    that disappears gets ``resolved_at``; if it comes back, the same row is opened again with a
    new ``first_seen``.
    """

    class Kind(models.TextChoices):
        # 1. every order has exactly one saga, and a finished saga agrees with its order
        ORDER_WITHOUT_SAGA = "order_without_saga", "order without its saga"
        SAGA_WITHOUT_ORDER = "saga_without_order", "order saga without its order"
        SAGA_ORDER_STATUS_MISMATCH = "saga_order_status_mismatch", "finished saga disagrees with its order"
        SAGA_FAILED = "saga_failed", "saga failed (compensation failed; money or stock may be held)"
        # 2. a confirmed order
        CONFIRMED_NOT_CHARGED_ONCE = "confirmed_not_charged_once", "confirmed order not charged exactly its total once"
        CONFIRMED_REFUNDED = "confirmed_refunded", "confirmed order refunded"
        CONFIRMED_STOCK_WRONG = "confirmed_stock_wrong", "confirmed order's stock not reserved exactly once"
        CONFIRMED_SHIPMENT_NOT_ONE = "confirmed_shipment_not_one", "confirmed order without exactly one live shipment"
        CONFIRMED_EMAIL_NOT_ONE = "confirmed_email_not_one", "confirmed order without exactly one confirmation email"
        # 3. a cancelled order
        CANCELLED_MONEY_HELD = "cancelled_money_held", "cancelled order: charges minus refunds is not zero"
        CANCELLED_STOCK_HELD = "cancelled_stock_held", "cancelled order still holds stock"
        CANCELLED_SHIPMENT_LIVE = "cancelled_shipment_live", "cancelled order with a live shipment"
        CANCELLED_NOTICE_WRONG = "cancelled_notice_wrong", "cancelled order without exactly one cancellation notice"
        # 4. money and shipments across contexts
        CHARGE_WITHOUT_ORDER = "charge_without_order", "gateway charge without an order"
        PAYMENT_LEDGER_MISMATCH = "payment_ledger_mismatch", "gateway and ledger disagree"
        SHIPMENT_WITHOUT_PAYMENT = "shipment_without_payment", "live shipment without a captured payment"
        # 5. stock
        STOCK_MISMATCH = "stock_mismatch", "stock level disagrees with its movements or reservations"
        RESERVATION_MISMATCH = "reservation_mismatch", "reservation disagrees with its stock movements"
        # 6. liveness
        SAGA_OVERDUE_NOT_STUCK = "saga_overdue_not_stuck", "saga past its deadline and not flagged stuck"
        OUTBOX_STALE = "outbox_stale", "outbox messages unpublished for too long"
        # 7. the providers' own books, and what the customer was told
        CARRIER_SHIPMENT_LIVE_CANCELLED = (
            "carrier_shipment_live_cancelled",
            "live shipment at the carrier for a cancelled order",
        )
        CARRIER_SHIPMENT_UNRECORDED = "carrier_shipment_unrecorded", "shipment at the carrier without our shipment row"
        CARRIER_SHIPMENT_TWICE = "carrier_shipment_twice", "more than one live shipment at the carrier for one order"
        GATEWAY_REFUNDS_EXCEED_CHARGE = "gateway_refunds_exceed_charge", "refunds at the gateway exceed their charge"
        GATEWAY_CHARGE_REFUNDED_TWICE = "gateway_charge_refunded_twice", "charge refunded more than once at the gateway"
        CANCELLATION_REFUND_UNMADE = (
            "cancellation_refund_unmade",
            "cancellation notice announces a refund the gateway never made",
        )
        # 8. what an operator did by hand
        MANUAL_STEP_UNRECORDED = "manual_step_unrecorded", "step done by hand without the participant's record"

    id = models.BigAutoField(primary_key=True)
    kind = models.CharField(max_length=40, choices=Kind.choices)
    key = models.CharField(max_length=200, help_text='the violating object, e.g. "order:123" or "product:7"')
    # Not named "objects": a field of that name would take the place of the model's manager.
    involved = models.JSONField(default=dict, help_text="ids of the objects involved, by kind of object")
    detail = models.TextField()
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True, help_text="empty while the violation is open")
    # Its lifecycle with the operators (audit/violations.py). The auditor's own upsert writes
    # rows with raw SQL, hence database defaults.
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.CharField(max_length=150, blank=True, db_default="")
    acknowledgement_note = models.TextField(blank=True, db_default="")
    resolved_by = models.CharField(
        max_length=150, blank=True, db_default="", help_text="the operator who resolved it; empty: the auditor"
    )
    resolution_reason = models.TextField(blank=True, db_default="")
    reopened = models.PositiveIntegerField(
        db_default=0, help_text="times the auditor found it again after it was resolved"
    )

    class Meta:
        permissions = [
            ("acknowledge_violation", "Can acknowledge an invariant violation"),
            ("resolve_violation", "Can resolve an invariant violation once repaired"),
        ]
        constraints = [models.UniqueConstraint(fields=["kind", "key"], name="violation_kind_key_unique")]
        indexes = [
            # The dashboard and the health check read only open violations.
            models.Index(fields=["kind", "first_seen"], name="violation_open_idx", condition=Q(resolved_at=None)),
        ]

    def __str__(self) -> str:
        since = self.first_seen.strftime("%Y-%m-%d %H:%M:%S") if self.first_seen else "?"
        return f"{self.kind} {self.key}: {self.detail} (since {since} UTC)"

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None

    @property
    def console_target(self) -> str:
        """What the console's search takes to land on the saga or order this is about: the
        saga id when the auditor named one, else the order id; empty for other objects."""
        involved = self.involved if isinstance(self.involved, dict) else {}
        if involved.get("saga"):
            return str(involved["saga"])
        if involved.get("order") is not None:
            return str(involved["order"])
        what, _, ident = self.key.partition(":")
        return ident if what in ("order", "saga") else ""


class AuditRun(models.Model):
    """One run of the auditor. Its watermark tells the next incremental run where to start."""

    id = models.BigAutoField(primary_key=True)
    started_at = models.DateTimeField(help_text="the database's clock when the run took its snapshot")
    finished_at = models.DateTimeField()
    full = models.BooleanField(help_text="a full sweep rather than only what changed")
    checked_orders = models.PositiveIntegerField()
    violations_found = models.PositiveIntegerField()
    resolved = models.PositiveIntegerField(default=0)
    watermark = models.JSONField(default=dict, help_text="the highest id of each append-only table at the snapshot")

    class Meta:
        indexes = [
            models.Index(fields=["-started_at"], name="auditrun_started_idx"),
            models.Index(fields=["-started_at"], name="auditrun_full_idx", condition=Q(full=True)),
        ]

    def __str__(self) -> str:
        return f"{'full' if self.full else 'incremental'} audit {self.started_at:%Y-%m-%d %H:%M:%S}"

    @property
    def duration_seconds(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()


class StockCheckpoint(models.Model):
    """One product's stock movements summed up to a movement id (the latest run's
    ``watermark["stock_checkpoint"]``), so that an incremental run adds only the movements
    since: a popular product has millions. Rebuilt from scratch by every full sweep."""

    product_id = models.BigIntegerField(primary_key=True)
    receipts = models.BigIntegerField()
    reserved = models.BigIntegerField(help_text="reserve movements minus release movements")

    def __str__(self) -> str:
        return f"product {self.product_id}: {self.receipts} received, {self.reserved} reserved"
