"""The statements the orchestrator runs on every reply (and on every saga's start), written
once as SQL.

Through the ORM, compiling the same few statements again for every reply (a lock, an update
of the step log, an insert into it, the saga row's update) cost more CPU than running them.
They read and write exactly what the ORM's get/create/update/save would; the models stay the
description of the tables. Every write-back of a locked saga (a reply, the sweeper, an operator)
goes through ``saga_save``.
"""

import datetime
import uuid
from typing import Any

from django.db import connection, models
from psycopg.types.json import Jsonb

from common.rows import mark_inserted
from sagas.models import Outcome, SagaInstance, SagaStep

_FIELDS = SagaInstance._meta.concrete_fields
_NAMES = [field.attname for field in _FIELDS]
_JSON = [isinstance(field, models.JSONField) for field in _FIELDS]
SAGA_COLUMNS = ", ".join(field.column for field in _FIELDS)

# Every column but the key and the creation time, as Model.save() writes them.
_SAVED = [field for field in _FIELDS if not field.primary_key and field.attname != "created_at"]
_SAVED_JSON = [isinstance(field, models.JSONField) for field in _SAVED]
_UPDATE_SQL = "UPDATE sagas_sagainstance SET {} WHERE id = %s".format(
    ", ".join(f"{field.column} = %s" for field in _SAVED)
)
# The creation time is the database's, as the column's default gives it.
_INSERT_SQL = "INSERT INTO sagas_sagainstance (id, {}) VALUES (%s, {}) RETURNING created_at".format(
    ", ".join(field.column for field in _SAVED), ", ".join("%s" for _ in _SAVED)
)
_STEP_NAMES = [field.attname for field in SagaStep._meta.concrete_fields]
_STEP_SENT_SQL = """
    INSERT INTO sagas_sagastep (saga_id, step, phase, attempt, idempotency_key, command_type, command_message_id,
                                outcome, error)
    VALUES (%s, %s, %s, %s, %s, %s, %s, 'pending', '')
    RETURNING id, sent_at
"""
_STEP_ANSWERED_SQL = """
    UPDATE sagas_sagastep SET reply = %s, reply_message_id = %s, replied_at = %s, outcome = %s, error = %s
     WHERE saga_id = %s AND step = %s AND phase = %s AND attempt = %s AND outcome = 'pending'
"""


def saga_from_row(row: tuple) -> SagaInstance:
    """A saga from a row of SAGA_COLUMNS (a raw cursor hands jsonb back as text)."""
    values = [
        field.from_db_value(value, None, connection) if is_json else value
        for field, is_json, value in zip(_FIELDS, _JSON, row, strict=True)
    ]
    return SagaInstance.from_db(connection.alias, _NAMES, values)


def saga_insert(saga: SagaInstance) -> None:
    """Insert a new saga, as ``saga.save(force_insert=True)`` would."""
    with connection.cursor() as cursor:
        cursor.execute(_INSERT_SQL, [saga.pk, *_saved_values(saga)])
        mark_inserted(saga, ("created_at",), cursor.fetchone())


def saga_save(saga: SagaInstance) -> None:
    """Write a locked saga back, as ``saga.save()`` of a loaded instance would."""
    with connection.cursor() as cursor:
        cursor.execute(_UPDATE_SQL, [*_saved_values(saga), saga.pk])
        assert cursor.rowcount == 1, f"saga {saga.pk} vanished under its lock"


def _saved_values(saga: SagaInstance) -> list[Any]:
    return [
        Jsonb(value) if is_json else value
        for is_json, value in zip(_SAVED_JSON, (getattr(saga, field.attname) for field in _SAVED), strict=True)
    ]


def step_record_sent(
    *, saga_id: uuid.UUID, step: str, phase: str, attempt: int, idempotency_key: str, command_type: str, message_id: Any
) -> SagaStep:
    """The step log's row of a command just published: pending until its reply. Returned as
    written, the database's own send time included."""
    with connection.cursor() as cursor:
        cursor.execute(_STEP_SENT_SQL, [saga_id, step, phase, attempt, idempotency_key, command_type, message_id])
        pk, sent_at = cursor.fetchone()
    if not isinstance(message_id, uuid.UUID):
        message_id = uuid.UUID(str(message_id))
    return SagaStep.from_db(
        connection.alias,
        _STEP_NAMES,
        [
            pk,
            saga_id,
            step,
            phase,
            attempt,
            idempotency_key,
            command_type,
            message_id,
            None,
            Outcome.PENDING,
            None,
            "",
            sent_at,
            None,
        ],
    )


def step_record_reply(
    *,
    saga_id: uuid.UUID,
    step: str,
    phase: str,
    attempt: int,
    reply: dict[str, Any],
    message_id: str,
    replied_at: datetime.datetime,
    outcome: str,
    error: str,
) -> bool:
    """Record the reply on the attempt it answers, if that attempt still waits for one.
    False when it does not (answered already, superseded, or unknown)."""
    assert outcome != Outcome.PENDING
    with connection.cursor() as cursor:
        cursor.execute(
            _STEP_ANSWERED_SQL,
            [Jsonb(reply), uuid.UUID(message_id), replied_at, outcome, error, saga_id, step, phase, attempt],
        )
        return cursor.rowcount == 1
