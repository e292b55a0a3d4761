"""Authenticated envelopes: a message takes effect only if this system wrote it.

The broker is not a trust boundary (ARCHITECTURE, rule 13): anyone who can write to Redis or
RabbitMQ, or a staff user allowed to add a periodic task, can put a well-formed
``outbox.consume`` task on a queue. So every envelope that leaves for the broker carries an
HMAC-SHA256 of its canonical form (every field but the signature, as compact JSON with sorted
keys: what the consumer acts on, ids, payload and headers alike), keyed by
``settings.OUTBOX_SIGNING_KEYS``, which come from the environment and never travel with the
messages. The first key signs, every key verifies: to rotate, put the new key first on every
process, and drop the old one once the queues (and Celery's retries, which keep the signature
they were sent with) have drained.

Where it is added and checked:

- The relay signs each envelope it hands to the broker (``broker.send_consume_tasks``, whichever transport:
  the hand-written Redis documents and ``send_task`` alike): they are the system's own outbox
  rows. Tests and tools that deliver by hand sign the relay's envelope the same way
  (``testing.messages.sent_envelope``).
- ``consumer.deliver`` verifies before it parses anything, so the Celery task, whatever queue
  or producer it came from, cannot skip it. The one exception is ``deliver(local=True)``:
  ``dispatch._deliver_here`` reads the rows from our own outbox table inside the very
  transaction that hands them to their handler, and nothing crosses a process boundary, so there
  is nothing to authenticate and no HMAC to spend twice per local message.

A signed message captured from the broker and sent again is still a duplicate: the inbox absorbs
it while its row is kept, and each participant's step outcome (rule 11) answers it after that.
"""

import hashlib
import hmac
import json
from functools import lru_cache

from django.conf import settings

SIGNATURE = "signature"
NOT_AUTHENTIC = "not authentic"


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


def canonical_json(envelope: dict) -> str:
    """The text signed: every field of the envelope but its signature, in one spelling."""
    if SIGNATURE in envelope:
        envelope = {name: value for name, value in envelope.items() if name != SIGNATURE}
    return _CANONICAL.encode(envelope)


def signed(envelope: dict) -> dict:
    """A copy of ``envelope`` with its signature under the first key."""
    return {**envelope, SIGNATURE: _digest(_keys()[0], canonical_json(envelope).encode())}


def signed_json(envelope: dict) -> str:
    """``signed(envelope)`` as JSON text, for a sender that writes the broker's documents itself:
    the canonical text is encoded once, for the signature and the message alike."""
    text = canonical_json(envelope)
    signature = _digest(_keys()[0], text.encode())
    return f'{text[:-1]},"{SIGNATURE}":"{signature}"}}' if len(text) > 2 else f'{{"{SIGNATURE}":"{signature}"}}'


def is_authentic(raw: object) -> bool:
    """Whether ``raw`` is an envelope signed by one of the accepted keys, unaltered."""
    if not isinstance(raw, dict):
        return False
    signature = raw.get(SIGNATURE)
    if not isinstance(signature, str):
        return False
    try:
        body = canonical_json(raw).encode()
    except (TypeError, ValueError):  # not JSON: no sender of ours wrote it
        return False
    return any(hmac.compare_digest(_digest(key, body), signature) for key in _keys())


_SIGNATURE_FIELD = b',"' + SIGNATURE.encode() + b'":"'
_HEX = frozenset(b"0123456789abcdef")


def is_authentic_text(text: bytes) -> bool:
    """Whether ``text`` is an envelope exactly as ``signed_json`` wrote it, signed by one of the
    accepted keys: the signature is checked on the bytes received, without decoding and encoding
    the envelope again (a consumer reading the stream checks thousands a second). Text in any
    other spelling is checked the slow way, by ``is_authentic`` on its decoded form."""
    start = len(text) - len(_SIGNATURE_FIELD) - 66  # the field, 64 hex digits, '"}'
    signature = text[start + len(_SIGNATURE_FIELD) : -2]
    if start < 1 or text[start:].find(_SIGNATURE_FIELD) != 0 or text[-2:] != b'"}' or not _HEX.issuperset(signature):
        try:
            return is_authentic(json.loads(text))
        except ValueError:
            return False
    body = text[:start] + b"}"
    return any(hmac.compare_digest(_digest(key, body), signature.decode()) for key in _keys())


def _digest(key: hmac.HMAC, body: bytes) -> str:
    mac = key.copy()
    mac.update(body)
    return mac.hexdigest()


def _keys() -> tuple[hmac.HMAC, ...]:
    return _prepared(tuple(settings.OUTBOX_SIGNING_KEYS))


@lru_cache(maxsize=4)
def _prepared(keys: tuple[str, ...]) -> tuple[hmac.HMAC, ...]:
    """One keyed HMAC per key, copied for each message (its key schedule is computed once)."""
    if not keys:
        raise RuntimeError("settings.OUTBOX_SIGNING_KEYS is empty: no envelope can be signed or verified")
    return tuple(hmac.new(key.encode(), digestmod=hashlib.sha256) for key in keys)
