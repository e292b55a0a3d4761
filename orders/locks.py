"""Row locks of the orders context, taken through one helper per table (ordered by pk where
several rows are locked) so that lock order is the same everywhere."""

from orders.models import IdempotencyKey


def lock_idempotency_key(*, pk: int, lock_token: object) -> IdempotencyKey | None:
    """Lock the key row if the given claim still holds it; None when it was taken over,
    completed or deleted in the meantime."""
    return (
        IdempotencyKey.objects.select_for_update()
        .filter(pk=pk, lock_token=lock_token, state=IdempotencyKey.State.IN_FLIGHT)
        .first()
    )
