"""Outbox messages as the system sends them, for tests that deliver by hand."""

from outbox.models import ENVELOPE_FIELDS, OutboxMessage, envelope_of
from outbox.signing import signed


def sent_envelope(message: OutboxMessage) -> dict:
    """The envelope the relay would put on the broker for this message: its row as stored,
    built by the one envelope builder (outbox.models.envelope_of) and signed like every
    envelope that leaves for the broker. A test that delivers it goes through the consumer's
    authenticity check exactly as a worker does."""
    row = OutboxMessage.objects.filter(pk=message.pk).values(*ENVELOPE_FIELDS).first()
    if row is None:
        raise OutboxMessage.DoesNotExist(f"no outbox row {message.pk}")
    return signed(envelope_of(row))
