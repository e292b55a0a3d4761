"""The statements the orchestrator runs on every reply (and on every saga's start), generated
from the models (common.rows).

Through the ORM, compiling the same few statements again for every reply (a lock, an update
of the step log, an insert into it, the saga row's update) cost more CPU than running them.
They read and write exactly what the ORM's get/create/update/save would (the parity tests
compare them field by field). Every write-back of a locked saga (a reply, the sweeper, an
operator) goes through ``saga_save``.

Measured with bench_saga --orders 1000 on a shared 2-core machine, these and the order's and the
outbox's raw inserts against the same writes through the ORM: sagas_per_s=5.9 raw (bench_machine
pg_commits_per_s=1384, celery_noop_tasks_per_s=232), 9.5 through the ORM (1614, 415): within that
machine's noise, to be measured again on a quiet one.
"""

import uuid
from typing import Any

from django.db import connection
from psycopg.types.json import Jsonb

from common.rows import (
    column_names,
    insert_statement,
    instance_from_row,
    instance_values,
    mark_inserted,
    select_columns,
    update_statement,
)
from sagas.models import Outcome, SagaInstance, SagaStep

SAGA_COLUMNS = select_columns(SagaInstance)

# Every column but the key and the creation time, as Model.save() writes them.
_SAVE = update_statement(SagaInstance, exclude=("created_at",))
# The creation time is the database's, as the column's default gives it.
_INSERT = insert_statement(SagaInstance, returning=("created_at",))
# The step log's row of a command just sent; the send time is the database's.
_STEP_SENT = insert_statement(SagaStep, returning=tuple(field.attname for field in SagaStep._meta.concrete_fields))
_STEP_ANSWERED_SQL = """
    UPDATE sagas_sagastep SET reply = %s, reply_message_id = %s, replied_at = STATEMENT_TIMESTAMP(), outcome = %s,
           error = %s
     WHERE saga_id = %s AND step = %s AND phase = %s AND attempt = %s AND outcome = 'pending'
"""


def saga_from_row(names: tuple[str, ...], row: tuple) -> SagaInstance:
    """A saga from a row read with SAGA_COLUMNS, by its columns' ``names``."""
    return instance_from_row(SagaInstance, names, row)


def saga_insert(saga: SagaInstance) -> None:
    """Insert a new saga, as ``saga.save(force_insert=True)`` would."""
    with connection.cursor() as cursor:
        cursor.execute(_INSERT.sql, _INSERT.params(instance_values(saga)))
        mark_inserted(saga, _INSERT.returning, cursor.fetchone())


def saga_save(saga: SagaInstance) -> None:
    """Write a locked saga back, as ``saga.save()`` of a loaded instance would."""
    with connection.cursor() as cursor:
        cursor.execute(_SAVE.sql, _SAVE.params(instance_values(saga)))
        assert cursor.rowcount == 1, f"saga {saga.pk} vanished under its lock"


def step_record_sent(
    *, saga_id: uuid.UUID, step: str, phase: str, attempt: int, idempotency_key: str, command_type: str, message_id: Any
) -> SagaStep:
    """The step log's row of a command just published: pending until its reply. Returned as
    written, the database's own send time included."""
    if not isinstance(message_id, uuid.UUID):
        message_id = uuid.UUID(str(message_id))
    values = {
        "saga_id": saga_id,
        "step": step,
        "phase": phase,
        "attempt": attempt,
        "idempotency_key": idempotency_key,
        "command_type": command_type,
        "command_message_id": message_id,
    }
    with connection.cursor() as cursor:
        cursor.execute(_STEP_SENT.sql, _STEP_SENT.params(values))
        return instance_from_row(SagaStep, column_names(cursor), cursor.fetchone())


def step_record_reply(
    *,
    saga_id: uuid.UUID,
    step: str,
    phase: str,
    attempt: int,
    reply: dict[str, Any],
    message_id: str,
    outcome: str,
    error: str,
) -> bool:
    """Record the reply on the attempt it answers, if that attempt still waits for one, at the
    database's time, as its send time was (Now(), the column's default, is STATEMENT_TIMESTAMP).
    False when it does not (answered already, superseded, or unknown)."""
    assert outcome != Outcome.PENDING
    with connection.cursor() as cursor:
        cursor.execute(
            _STEP_ANSWERED_SQL,
            [Jsonb(reply), uuid.UUID(message_id), outcome, error, saga_id, step, phase, attempt],
        )
        return cursor.rowcount == 1
