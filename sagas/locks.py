"""Row locks of the saga engine, always taken in primary-key order so that two
transactions locking several sagas can never deadlock."""

import uuid

from django.db import connection

from common.rows import column_names
from sagas.models import SagaInstance
from sagas.rows import SAGA_COLUMNS, saga_from_row

# Every reply locks its saga: one statement prepared once instead of a query compiled anew.
_LOCK_SQL = f"SELECT {SAGA_COLUMNS} FROM sagas_sagainstance WHERE id = %s FOR UPDATE"


def lock_saga(saga_id: object) -> SagaInstance:
    """The saga, locked until the end of the transaction. ValueError for an id that is not a
    uuid, SagaInstance.DoesNotExist for one that names no saga."""
    pk = saga_id if isinstance(saga_id, uuid.UUID) else uuid.UUID(str(saga_id))
    with connection.cursor() as cursor:
        cursor.execute(_LOCK_SQL, [pk])
        row = cursor.fetchone()
        if row is None:
            raise SagaInstance.DoesNotExist(f"no saga {pk}")
        return saga_from_row(column_names(cursor), row)
