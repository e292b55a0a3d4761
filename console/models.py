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
