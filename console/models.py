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
