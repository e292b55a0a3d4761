"""Outbox messages as the system sends them, for tests that deliver by hand."""

from django.db import connection

from outbox import relay
from outbox.models import OutboxMessage
from outbox.signing import signed


def sent_envelope(message: OutboxMessage) -> dict:
    """The envelope the relay would put on the broker for this message: its row read with the
    relay's columns, built by the relay's own envelope builder and signed like every envelope
    that leaves for the broker. A test that delivers it goes through the consumer's
    authenticity check exactly as a worker does."""
    columns = ", ".join(relay._COLUMNS)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id, {columns} FROM outbox_outboxmessage WHERE id = %s", [message.pk])
        row = cursor.fetchone()
    if row is None:
        raise OutboxMessage.DoesNotExist(f"no outbox row {message.pk}")
    return signed(relay._envelope(row))
