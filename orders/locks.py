"""Row locks of the orders context, taken through one helper per table (ordered by pk where
several rows are locked) so that lock order is the same everywhere."""

from django.db import connection

# Every order placed through the API takes this lock: one statement prepared once.
_LOCK_CLAIM_SQL = """
    SELECT id FROM orders_idempotencykey
     WHERE id = %s AND lock_token = %s AND state = 'in_flight'
       FOR UPDATE
"""


def lock_idempotency_key(*, pk: int, lock_token: object) -> bool:
    """Lock the key row if the given claim still holds it; False when it was taken over,
    completed or deleted in the meantime."""
    with connection.cursor() as cursor:
        cursor.execute(_LOCK_CLAIM_SQL, [pk, lock_token])
        return cursor.fetchone() is not None
