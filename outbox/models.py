import uuid
from collections.abc import Mapping
from typing import Any

from django.db import models
from django.db.models.functions import Now


class OutboxMessage(models.Model):
    """A message written in the same transaction as the change that causes it.

    The bigint primary key is the publication order: writers of one aggregate hold its row
    lock while they publish, so for one aggregate id order equals commit order.
    """

    id = models.BigAutoField(primary_key=True)
    message_id = models.UUIDField(unique=True, default=uuid.uuid4, editable=False)
    type = models.CharField(max_length=100)
    destination = models.CharField(max_length=50, help_text="the consuming context (its Celery queue)")
    aggregate = models.CharField(max_length=50)
    aggregate_id = models.CharField(max_length=64)
    correlation_id = models.CharField(max_length=64, db_index=True)
    causation_id = models.CharField(max_length=64, blank=True)
    traceparent = models.CharField(max_length=55, blank=True)
    payload = models.JSONField()
    headers = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(db_default=Now())
    available_at = models.DateTimeField(db_default=Now())
    published_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)

    class Meta:
        indexes = [
            # The relay's claim query reads only unpublished rows, in id order.
            models.Index(
                fields=["id"],
                name="outbox_unpublished_idx",
                condition=models.Q(published_at__isnull=True),
            ),
            # Direct dispatch looks for an older unpublished message of the same aggregate.
            models.Index(
                fields=["aggregate", "aggregate_id", "id"],
                name="outbox_unpublished_agg_idx",
                condition=models.Q(published_at__isnull=True),
            ),
            # The relay claims integration events apart (outbox.stream): unpublished ones, in id order.
            models.Index(
                fields=["id"],
                name="outbox_unpublished_stream_idx",
                condition=models.Q(published_at__isnull=True, destination="stream"),
            ),
            models.Index(fields=["published_at"], name="outbox_published_at_idx"),
            models.Index(fields=["created_at"], name="outbox_created_at_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.type} -> {self.destination} ({self.message_id})"


# What an envelope carries of its outbox row, in this order; the relay selects these columns.
ENVELOPE_FIELDS = (
    "message_id",
    "type",
    "destination",
    "aggregate",
    "aggregate_id",
    "correlation_id",
    "causation_id",
    "traceparent",
    "created_at",
    "payload",
    "headers",
)


def envelope_of(row: Mapping[str, Any]) -> dict[str, Any]:
    """The (unsigned) envelope of an outbox row given by attname: an instance's fields or a
    row the relay read. The one place that says what a message looks like on the wire."""
    envelope = {name: row[name] for name in ENVELOPE_FIELDS}
    envelope["message_id"] = str(envelope["message_id"])
    envelope["created_at"] = envelope["created_at"].isoformat()
    return envelope


class InboxMessage(models.Model):
    """A message a consumer has handled. Inserted in the transaction of the handler's effect."""

    id = models.BigAutoField(primary_key=True)
    consumer = models.CharField(max_length=50)
    message_id = models.UUIDField()
    type = models.CharField(max_length=100)
    correlation_id = models.CharField(max_length=64, blank=True)
    received_at = models.DateTimeField(db_default=Now())

    class Meta:
        constraints = [models.UniqueConstraint(fields=["consumer", "message_id"], name="inbox_consumer_message_unique")]
        indexes = [models.Index(fields=["received_at"], name="inbox_received_at_idx")]

    def __str__(self) -> str:
        return f"{self.consumer}: {self.type} ({self.message_id})"


class DeadLetter(models.Model):
    """A message a consumer gave up on, kept with its reason until an operator replays it or
    discards it (with who, when and why: a dead letter is never deleted)."""

    class Status(models.TextChoices):
        DEAD = "dead", "dead"
        REPLAYED = "replayed", "replayed"
        DISCARDED = "discarded", "discarded"

    # What a dead letter's fields say when it waits for an operator again (dead once more).
    UNRESOLVED: dict[str, Any] = {"status": Status.DEAD, "discarded_by": "", "discarded_at": None, "discard_reason": ""}

    id = models.BigAutoField(primary_key=True)
    consumer = models.CharField(max_length=50)
    message_id = models.CharField(max_length=64, help_text="as received; a poison message may have none")
    type = models.CharField(max_length=100, blank=True)
    correlation_id = models.CharField(max_length=64, blank=True, db_index=True)
    envelope = models.JSONField()
    reason = models.TextField()
    error_class = models.CharField(
        max_length=100, blank=True, db_default="", help_text="the exception's class: failures are grouped by it"
    )
    traceback = models.TextField(blank=True)
    poison = models.BooleanField(default=False)
    attempts = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DEAD)
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())
    replayed_at = models.DateTimeField(null=True, blank=True)
    replay_count = models.PositiveIntegerField(default=0)
    discarded_by = models.CharField(max_length=150, blank=True, db_default="")
    discarded_at = models.DateTimeField(null=True, blank=True)
    discard_reason = models.TextField(blank=True, db_default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["consumer", "message_id"], name="deadletter_consumer_message_unique")
        ]
        indexes = [models.Index(fields=["status", "created_at"], name="deadletter_status_idx")]
        permissions = [
            ("replay_deadletter", "Can replay a dead letter"),
            ("discard_deadletter", "Can discard a dead letter with a reason"),
        ]

    def __str__(self) -> str:
        return f"{self.consumer}: {self.type or '?'} ({self.message_id})"
