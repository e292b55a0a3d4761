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
