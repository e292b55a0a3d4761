"""Handle outbox messages synchronously in the test process, for unit tests of the
orchestrator's decisions (the delivery machinery itself is proven with a real worker)."""

from django.db.models.functions import Now

from outbox.consumer import deliver
from outbox.models import OutboxMessage
from outbox.stream import STREAM_DESTINATION
from testing.messages import sent_envelope


def pump(*, max_messages: int = 200, skip: set[str] | None = None) -> list[OutboxMessage]:
    """Deliver unpublished messages in order, like relay + worker would, until none remain;
    integration events, which are the stream's and no handler's, are marked published."""
    handled = []
    for _ in range(max_messages):
        message = (
            OutboxMessage.objects.filter(published_at__isnull=True)
            .exclude(destination=STREAM_DESTINATION)  # events are the stream's, which no handler consumes
            .exclude(type__in=skip or set())
            .order_by("id")
            .first()
        )
        if message is None:
            # What the relay would publish to the stream: no handler of ours consumes it.
            OutboxMessage.objects.filter(published_at__isnull=True, destination=STREAM_DESTINATION).update(
                published_at=Now()
            )
            return handled
        OutboxMessage.objects.filter(pk=message.pk).update(published_at=message.created_at)
        deliver(sent_envelope(message))
        handled.append(message)
    raise AssertionError("the saga did not settle")
