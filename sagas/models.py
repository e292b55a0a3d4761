import uuid

from django.contrib.postgres.indexes import GinIndex
from django.db import models
from django.db.models.functions import Now

from sagas.keys import step_key


class SagaState(models.TextChoices):
    RUNNING = "running", "running"
    COMPENSATING = "compensating", "compensating"
    COMPLETED = "completed", "completed"
    COMPENSATED = "compensated", "compensated"
    FAILED = "failed", "failed (compensation failed)"


TERMINAL_STATES = (SagaState.COMPLETED, SagaState.COMPENSATED, SagaState.FAILED)


class Phase(models.TextChoices):
    FORWARD = "forward", "forward"
    COMPENSATION = "compensation", "compensation"


class Outcome(models.TextChoices):
    PENDING = "pending", "pending"
    SUCCESS = "success", "success"
    BUSINESS_FAILURE = "business_failure", "business failure"
    TECHNICAL_FAILURE = "technical_failure", "technical failure"
    SUPERSEDED = "superseded", "superseded by a later attempt"
    MANUAL = "manual", "done by hand"


class SagaInstance(models.Model):
    """One run of a saga. Its id is the correlation id of every message it causes."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    definition_name = models.CharField(max_length=100)
    definition_version = models.PositiveIntegerField()
    state = models.CharField(max_length=20, choices=SagaState.choices, default=SagaState.RUNNING)
    aggregate = models.CharField(max_length=50)
    aggregate_id = models.CharField(max_length=64)
    idempotency_key = models.CharField(max_length=300, blank=True, help_text="the key that started the saga")
    traceparent = models.CharField(
        max_length=55,
        blank=True,
        db_default="",
        help_text="the trace the saga started in; the sweeper's resends continue it",
    )
    current_step = models.CharField(max_length=100, blank=True)
    attempt = models.PositiveIntegerField(default=0)
    completed_steps = models.JSONField(default=list, blank=True)
    compensated_steps = models.JSONField(default=list, blank=True)
    data = models.JSONField(default=dict)
    failure_reason = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)
    stuck = models.BooleanField(default=False)
    stuck_reason = models.TextField(blank=True)
    stuck_since = models.DateTimeField(null=True, blank=True)
    step_started_at = models.DateTimeField(null=True, blank=True)
    step_deadline = models.DateTimeField(null=True, blank=True)
    last_sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())
    finished_at = models.DateTimeField(null=True, blank=True)
    first_finished_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="when the saga first ended; a failed saga repaired later ends again, and is counted once",
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["aggregate", "aggregate_id"], name="saga_one_per_aggregate"),
            models.CheckConstraint(
                condition=models.Q(state__in=[choice.value for choice in SagaState]), name="saga_state_valid"
            ),
            # Stuck is a flag of a saga in flight; a finished or failed one shows its state alone.
            models.CheckConstraint(
                condition=models.Q(stuck=False) | models.Q(state__in=["running", "compensating"]),
                name="saga_stuck_only_in_flight",
            ),
        ]
        indexes = [
            models.Index(fields=["state", "created_at"], name="saga_state_created_idx"),
            models.Index(fields=["created_at"], name="saga_created_idx"),
            # The dashboard counts sagas by state over a time window with an index-only scan.
            models.Index(fields=["created_at"], include=["state"], name="saga_created_state_idx"),
            models.Index(fields=["finished_at"], name="saga_finished_idx"),
            models.Index(
                fields=["step_deadline"],
                name="saga_active_deadline_idx",
                condition=models.Q(state__in=["running", "compensating"]),
            ),
            models.Index(fields=["stuck_since"], name="saga_stuck_idx", condition=models.Q(stuck=True)),
            # The "needs attention" view: sagas retrying before they are flagged stuck.
            models.Index(
                fields=["step_started_at"],
                name="saga_retrying_idx",
                condition=models.Q(state__in=["running", "compensating"], stuck=False, attempt__gt=1),
            ),
            # The console's search by the key an API client sent (stored as "api:<client>:<key>").
            GinIndex(fields=["idempotency_key"], opclasses=["gin_trgm_ops"], name="saga_idempotency_key_trgm_idx"),
        ]
        permissions = [
            ("retry_saga", "Can retry a saga's current step"),
            ("compensate_saga", "Can compensate a saga"),
            ("retry_compensation_saga", "Can retry a saga's failed compensation"),
            ("mark_step_done_saga", "Can mark a saga step done by hand"),
        ]

    def __str__(self) -> str:
        return f"{self.definition_name} {self.id} ({self.state})"

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def phase(self) -> str:
        return Phase.COMPENSATION if self.state in (SagaState.COMPENSATING, SagaState.FAILED) else Phase.FORWARD

    def step_key(self, step: str, phase: str | None = None) -> str:
        """The idempotency key of a step: the same on every attempt, derived, never random."""
        return step_key(self.id, step, compensation=(phase or self.phase) == Phase.COMPENSATION)


class SagaStep(models.Model):
    """The step log: one row per attempt of a step or compensation, with its reply."""

    id = models.BigAutoField(primary_key=True)
    saga = models.ForeignKey(SagaInstance, on_delete=models.PROTECT, related_name="steps")
    step = models.CharField(max_length=100)
    phase = models.CharField(max_length=20, choices=Phase.choices)
    attempt = models.PositiveIntegerField()
    idempotency_key = models.CharField(max_length=300)
    command_type = models.CharField(max_length=100, blank=True)
    command_message_id = models.UUIDField(null=True, blank=True)
    reply_message_id = models.UUIDField(null=True, blank=True)
    outcome = models.CharField(max_length=20, choices=Outcome.choices, default=Outcome.PENDING)
    reply = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    sent_at = models.DateTimeField(db_default=Now())
    replied_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["saga", "step", "phase", "attempt"], name="sagastep_attempt_unique")
        ]

    def __str__(self) -> str:
        return f"{self.step} ({self.phase}) #{self.attempt}: {self.outcome}"

    @property
    def duration_ms(self) -> float | None:
        if self.replied_at is None or self.sent_at is None:
            return None
        # Both are the database's time; a clock stepped back between them is not a negative wait.
        return max(0.0, round((self.replied_at - self.sent_at).total_seconds() * 1000, 1))


class SagaEvent(models.Model):
    """Things that happened to a saga besides step attempts: ignored replies, flags, requests."""

    id = models.BigAutoField(primary_key=True)
    saga = models.ForeignKey(SagaInstance, on_delete=models.PROTECT, related_name="events")
    kind = models.CharField(max_length=40)
    detail = models.TextField(blank=True)
    message_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail[:60]}"
