"""The operator action log: who did what to which saga, why, and what came of it."""

from django.conf import settings
from django.db import models
from django.db.models.functions import Now

from sagas.models import SagaInstance


class AuditLog(models.Model):
    """Append-only record of every operator action: who, when, on what, why, with what outcome."""

    id = models.BigAutoField(primary_key=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT)
    actor_name = models.CharField(max_length=150)
    action = models.CharField(max_length=50)
    saga = models.ForeignKey(SagaInstance, null=True, blank=True, on_delete=models.PROTECT, related_name="audit")
    target = models.CharField(max_length=100, blank=True)
    reason = models.TextField()
    outcome = models.TextField()
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["-id"]
        # The table kept its name when the log moved from the engine to the console.
        db_table = "sagas_auditlog"

    def __str__(self) -> str:
        return f"{self.actor_name} {self.action} {self.saga_id or self.target}"


class BulkRepair(models.Model):
    """One operator's repair of many sagas: the exact sagas frozen when it was confirmed (its
    items), a canary run first and judged before the rest, and a rate for the rest. Advanced
    outside the web request by beat (console.bulk_repairs)."""

    class Status(models.TextChoices):
        CANARY = "canary", "canary: waiting for the first saga's outcome"
        RUNNING = "running", "running the rest"
        DONE = "done", "done"
        STOPPED = "stopped", "stopped"

    id = models.BigAutoField(primary_key=True)
    requester = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    requester_name = models.CharField(max_length=150)
    action = models.CharField(max_length=50)
    reason = models.TextField()
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.CANARY)
    # Why it stopped, or how it ended, in words.
    status_detail = models.TextField(blank=True)
    rate_per_minute = models.PositiveIntegerField()
    canary = models.ForeignKey(SagaInstance, null=True, on_delete=models.PROTECT, related_name="+")
    # The earliest moment the next saga after the canary may be sent: the rate limit.
    next_send_at = models.DateTimeField(null=True)
    created_at = models.DateTimeField(db_default=Now())
    finished_at = models.DateTimeField(null=True)

    class Meta:
        ordering = ["-id"]
        constraints = [models.CheckConstraint(condition=models.Q(rate_per_minute__gte=1), name="bulk_repair_rate")]
        indexes = [models.Index(fields=["status"], name="bulk_repair_status")]

    def __str__(self) -> str:
        return f"bulk {self.action} #{self.pk} by {self.requester_name}"


class BulkRepairItem(models.Model):
    """One saga of a bulk repair, with what became of it."""

    class Status(models.TextChoices):
        WAITING = "waiting", "waiting"
        SENT = "sent", "sent, waiting for its outcome"
        DONE = "done", "done"
        FAILED_AGAIN = "failed_again", "failed again"
        REFUSED = "refused", "refused"
        NOT_RUN = "not_run", "not run"

    id = models.BigAutoField(primary_key=True)
    repair = models.ForeignKey(BulkRepair, on_delete=models.CASCADE, related_name="items")
    saga = models.ForeignKey(SagaInstance, on_delete=models.PROTECT, related_name="+")
    # The order in which the sagas are run (the canary is the first that can be).
    position = models.PositiveIntegerField()
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.WAITING)
    outcome = models.TextField(blank=True)
    # Where the action left the saga: its outcome is judged against this.
    sent_step = models.CharField(max_length=100, blank=True)
    sent_phase = models.CharField(max_length=20, blank=True)
    sent_attempt = models.PositiveIntegerField(null=True)
    sent_at = models.DateTimeField(null=True)
    finished_at = models.DateTimeField(null=True)

    class Meta:
        ordering = ["repair", "position"]
        constraints = [
            models.UniqueConstraint(fields=["repair", "saga"], name="bulk_repair_item_saga_once"),
            models.UniqueConstraint(fields=["repair", "position"], name="bulk_repair_item_position"),
        ]

    def __str__(self) -> str:
        return f"{self.saga_id} {self.status}"


class ApprovalRequest(models.Model):
    """An operator action on money that waits for a second operator (four eyes): who asked,
    what, on which saga, with what evidence and why; who decided, when, and what came of it."""

    class Status(models.TextChoices):
        PENDING = "pending", "pending"
        APPROVED = "approved", "approved"
        REJECTED = "rejected", "rejected"
        EXECUTED = "executed", "executed"
        EXPIRED = "expired", "expired"

    id = models.BigAutoField(primary_key=True)
    action = models.CharField(max_length=50)
    saga = models.ForeignKey(SagaInstance, on_delete=models.PROTECT, related_name="approval_requests")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT, related_name="approval_requests"
    )
    requested_by_name = models.CharField(max_length=150)
    reason = models.TextField()
    evidence = models.TextField(blank=True)
    # The saga's step and phase the requester decided on: approved later, the action applies
    # only if the saga is still there.
    position = models.CharField(max_length=200, blank=True)
    amount = models.BigIntegerField(null=True, help_text="minor units")
    currency = models.CharField(max_length=3, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    approver = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="approvals_decided"
    )
    approver_name = models.CharField(max_length=150, blank=True)
    decision_reason = models.TextField(blank=True)
    result = models.TextField(blank=True)
    created_at = models.DateTimeField(db_default=Now())
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            # A second request for the same action on the same saga while one waits would let
            # two approvals run it twice.
            models.UniqueConstraint(
                fields=["saga", "action"], condition=models.Q(status="pending"), name="one_pending_approval_per_action"
            )
        ]
        indexes = [models.Index(fields=["status", "created_at"], name="approval_status_idx")]

    def __str__(self) -> str:
        return f"approval #{self.pk} {self.action} {self.saga_id} ({self.status})"


class Incident(models.Model):
    """One thing going wrong, however many sagas it touches ("stuck:charge_payment",
    "dead_letters:payments", "process:worker"): open while its condition holds, alerted once
    when it opens (console/alerts.py)."""

    id = models.BigAutoField(primary_key=True)
    key = models.CharField(max_length=200)
    title = models.CharField(max_length=300)
    detail = models.TextField(blank=True)
    link = models.CharField(max_length=500, blank=True, help_text="the console page that shows it")
    count = models.PositiveIntegerField(default=0, help_text="how many it counts at the last check")
    opened_at = models.DateTimeField(db_default=Now())
    last_seen_at = models.DateTimeField(db_default=Now())
    closed_at = models.DateTimeField(null=True, blank=True)
    last_sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["key"], condition=models.Q(closed_at__isnull=True), name="one_open_incident_per_key"
            )
        ]

    def __str__(self) -> str:
        return f"{self.key} ({'open' if self.closed_at is None else 'closed'})"


class AlertDelivery(models.Model):
    """An alert to send (outbox-style: written with the incident, sent later by the alert
    sender, retried with backoff): one per incident and channel."""

    class Channel(models.TextChoices):
        WEBHOOK = "webhook", "webhook"
        EMAIL = "email", "email"

    class Status(models.TextChoices):
        PENDING = "pending", "pending"
        SENT = "sent", "sent"
        FAILED = "failed", "failed (gave up)"

    id = models.BigAutoField(primary_key=True)
    incident = models.ForeignKey(Incident, on_delete=models.PROTECT, related_name="deliveries")
    channel = models.CharField(max_length=10, choices=Channel.choices)
    target = models.CharField(max_length=500, help_text="the URL or the addresses")
    payload = models.JSONField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(db_default=Now())
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(db_default=Now())
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(
                fields=["next_attempt_at"], condition=models.Q(status="pending"), name="alert_delivery_due_idx"
            )
        ]

    def __str__(self) -> str:
        return f"{self.channel} alert {self.pk} ({self.status})"
