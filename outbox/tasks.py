"""Celery entry points of the messaging layer. Thin: the logic lives in relay/consumer/services."""

from celery import shared_task

from outbox import consumer, services
from outbox.relay import relay_drain


@shared_task(name="outbox.relay", ignore_result=True, acks_late=False)
def relay() -> int:
    # Not acks_late: a relay lost with its worker is simply run again by beat a second later.
    return relay_drain()


@shared_task(bind=True, name="outbox.consume", ignore_result=True, max_retries=None)
def consume(self, envelope: object) -> str:
    try:
        return consumer.deliver(envelope, attempt=self.request.retries, queue=_queue_of(self))
    except consumer.RetryLater as retry:
        raise self.retry(countdown=retry.countdown, exc=retry.cause) from None


@shared_task(name="outbox.purge", ignore_result=True)
def purge() -> dict[str, int]:
    return services.retention_purge()


def _queue_of(task) -> str:
    info = task.request.delivery_info or {}
    return info.get("routing_key") or info.get("exchange") or ""
