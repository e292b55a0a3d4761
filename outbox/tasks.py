"""Celery entry points of the messaging layer. Thin: the logic lives in relay/consumer/services."""

import re

from celery import shared_task

from outbox import consumer, services
from outbox.broker import broker_countdown
from outbox.relay import relay_drain

# kombu.transport.native_delayed_delivery: 28 levels of "0." or "1." before the routing key.
_DELAY_BITS = re.compile(r"^(?:[01]\.){28}")


@shared_task(name="outbox.relay", ignore_result=True, acks_late=False)
def relay() -> int:
    # Not acks_late: a relay lost with its worker is simply run again by beat a second later.
    return relay_drain()


@shared_task(bind=True, name="outbox.consume", ignore_result=True, max_retries=None)
def consume(self, envelope: object) -> str:
    queue = _queue_of(self)
    try:
        return consumer.deliver(envelope, attempt=self.request.retries, queue=queue)
    except consumer.RetryLater as retry:
        # Named, so the copy goes back to this queue: from the delivery info alone, Celery's
        # delayed delivery on RabbitMQ would route it by the default queue's key.
        raise self.retry(countdown=broker_countdown(retry.countdown), exc=retry.cause, queue=queue or None) from None


@shared_task(name="outbox.purge", ignore_result=True)
def purge() -> dict[str, int]:
    return services.retention_purge()


def _queue_of(task) -> str:
    info = task.request.delivery_info or {}
    # A message that went through RabbitMQ's delayed delivery has the delay's bits before its key.
    return _DELAY_BITS.sub("", info.get("routing_key") or "") or info.get("exchange") or ""
