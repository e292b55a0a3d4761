"""Reads of the messaging layer, for the admin, the dashboard, the health check and the saga sweeper."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from django.conf import settings
from django.db.models import Count, Min, QuerySet
from django.utils import timezone

from outbox.models import DeadLetter, OutboxMessage


@dataclass(frozen=True)
class Backlog:
    count: int
    oldest_created_at: datetime | None

    @property
    def oldest_age_seconds(self) -> float:
        if self.oldest_created_at is None:
            return 0.0
        return max(0.0, (timezone.now() - self.oldest_created_at).total_seconds())


def outbox_backlog() -> Backlog:
    """Count and age of unpublished messages (served by the partial index)."""
    result = OutboxMessage.objects.filter(published_at__isnull=True).aggregate(
        count=Count("id"), oldest=Min("created_at")
    )
    return Backlog(count=result["count"], oldest_created_at=result["oldest"])


def any_unpublished(message_ids: Iterable[UUID] | QuerySet) -> bool:
    """Whether any of these messages (their message_id, or a subquery of them) still waits in
    the outbox, not yet handed to the broker."""
    return OutboxMessage.objects.filter(message_id__in=message_ids, published_at__isnull=True).exists()


def dead_letter_exists(*, message_id: str) -> bool:
    """Whether this message gave up and waits as a dead letter (not replayed since)."""
    return DeadLetter.objects.filter(message_id=message_id, status=DeadLetter.Status.DEAD).exists()


def dead_letter_count() -> int:
    return DeadLetter.objects.filter(status=DeadLetter.Status.DEAD).count()


def messages_of_correlation(correlation_id: str) -> list[OutboxMessage]:
    return list(OutboxMessage.objects.filter(correlation_id=correlation_id).order_by("id"))


def correlation_ids_of_message(*, message_id: str) -> list[str]:
    """The correlation ids (sagas) of a message id, as sent or as dead-lettered: the outbox's
    unique message id, and the dead letters' (consumer, message id) index, for each consumer."""
    try:
        parsed = UUID(message_id.strip())
    except ValueError:
        return []
    found = set(OutboxMessage.objects.filter(message_id=parsed).values_list("correlation_id", flat=True))
    consumers = ["default", *settings.MESSAGE_QUEUES]
    found |= set(
        DeadLetter.objects.filter(consumer__in=consumers, message_id=str(parsed)).values_list(
            "correlation_id", flat=True
        )
    )
    return sorted(correlation for correlation in found if correlation)
