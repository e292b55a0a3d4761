"""Celery entry points of the orders context. Thin: the logic lives in the modules they call."""

from celery import shared_task

from orders.idempotency import idempotency_keys_purge


@shared_task(name="orders.purge_idempotency_keys", ignore_result=True)
def purge_idempotency_keys() -> int:
    return idempotency_keys_purge()
