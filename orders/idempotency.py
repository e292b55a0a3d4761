"""Idempotency keys of the storefront API, with Stripe's semantics, kept in PostgreSQL.

Storefront clients retry on timeouts and lose responses, so the same request may arrive
twice, or twenty times at once. A key is claimed by inserting its row in a short committed
transaction (``INSERT ... ON CONFLICT DO NOTHING`` on the unique (client, key) pair): exactly
one request wins the insert, and every concurrent duplicate sees the committed claim at once
and is told to retry (409) instead of queueing behind it. The winner then does the work and
records the response in ONE transaction, so a key never says ``completed`` without its order
and an order never commits without its key completed. A failed request deletes its claim,
so the client can fix the request and retry with the same key; a request that crashed
without deleting it leaves a stale claim that a retry takes over after a timeout.

All times are compared on the database clock (``now()``), never the web server's: clocks of
different hosts disagree, and only deadlines depend on them here.
"""

import hashlib
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import DatabaseError, connection, transaction
from django.db.models import BooleanField, ExpressionWrapper, Q
from django.db.models.functions import Now
from psycopg.types.json import Jsonb

from common import metrics
from common.rows import insert_statement
from orders.exceptions import IdempotencyKeyInUse, IdempotencyKeyReused
from orders.models import IdempotencyKey, Order

logger = logging.getLogger(__name__)

# A claim that vanishes or changes hands between our insert and our read is looked at again;
# past this many rounds something keeps racing us and the client is told to retry.
MAX_CLAIM_ROUNDS = 5


@dataclass(frozen=True)
class StoredResponse:
    """A response as first given, replayed byte for byte to every retry."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    replayed: bool = False


@dataclass(frozen=True)
class IdempotentResult:
    """What the guarded work produced: the response to store and the order it created."""

    response: StoredResponse
    order: Order


@dataclass(frozen=True)
class Claim:
    pk: int
    lock_token: uuid.UUID


def request_fingerprint(*, method: str, path: str, payload: object) -> str:
    """sha256 of the method, the path and the body as canonical JSON: a retry that serialises
    the same body with other whitespace or key order is the same request."""
    body = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(f"{method.upper()}\n{path}\n{body}".encode()).hexdigest()


def idempotent_response(
    *,
    client: AbstractBaseUser,
    key: str,
    method: str,
    path: str,
    payload: object,
    produce: Callable[[], IdempotentResult],
) -> StoredResponse:
    """Run ``produce`` at most once per (client, key) and give every retry its response.

    ``produce`` runs inside the transaction that completes the key; whatever it raises
    leaves nothing behind, neither its writes nor the claim on the key.
    Raises IdempotencyKeyReused (same key, different request) and IdempotencyKeyInUse (a
    request with this key is still being processed).
    """
    fingerprint = request_fingerprint(method=method, path=path, payload=payload)
    try:
        for _ in range(MAX_CLAIM_ROUNDS):
            outcome = _claim_or_replay(client=client, key=key, fingerprint=fingerprint, method=method, path=path)
            if isinstance(outcome, StoredResponse):
                metrics.idempotency_outcome("replayed")
                return outcome
            if isinstance(outcome, Claim):
                return _run_claimed(claim=outcome, produce=produce)
        raise IdempotencyKeyInUse("a request with this Idempotency-Key is being processed; retry later")
    except IdempotencyKeyInUse:
        metrics.idempotency_outcome("in_use")
        raise
    except IdempotencyKeyReused:
        metrics.idempotency_outcome("reused")
        raise


_CLAIM = insert_statement(IdempotencyKey, on_conflict="ON CONFLICT (client_id, key) DO NOTHING", returning=("id",))


_COMPLETE_SQL = """
    UPDATE orders_idempotencykey
       SET state = 'completed', response_status = %s, response_headers = %s, response_body = %s, order_id = %s,
           completed_at = statement_timestamp()
     WHERE id = %s AND lock_token = %s AND state = 'in_flight'
"""


def _claim_or_replay(
    *, client: AbstractBaseUser, key: str, fingerprint: str, method: str, path: str
) -> Claim | StoredResponse | None:
    """Claim the key, or answer from what an earlier request with it left. None: look again."""
    token = uuid.uuid4()
    # Autocommitted on its own: a duplicate must see the claim now, not when our work commits.
    # The first request with a key (nearly every request) learns from the insert alone that
    # the claim is its own; only a key that exists already is read.
    with connection.cursor() as cursor:
        values = {"client_id": client.pk, "key": key, "fingerprint": fingerprint, "method": method, "path": path}
        cursor.execute(_CLAIM.sql, _CLAIM.params({**values, "lock_token": token}))
        claimed = cursor.fetchone()
    if claimed is not None:
        return Claim(pk=claimed[0], lock_token=token)
    row = (
        IdempotencyKey.objects.filter(client=client, key=key)
        .annotate(
            expired=ExpressionWrapper(_older_than("created_at", _ttl()), BooleanField()),
            stale=ExpressionWrapper(
                _older_than("locked_at", settings.IDEMPOTENCY_IN_FLIGHT_TIMEOUT_SECONDS), BooleanField()
            ),
        )
        .first()
    )
    if row is None:
        return None  # the holder failed and released the key between our insert and our read
    if row.lock_token == token:
        return Claim(pk=row.pk, lock_token=token)
    if row.expired:
        # Past its 24 hours the key is free again, whether or not the purge got to it yet.
        IdempotencyKey.objects.filter(pk=row.pk).filter(_older_than("created_at", _ttl())).delete()
        return None
    if row.fingerprint != fingerprint:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was already used for a different request; use a new key for a new request"
        )
    if row.state == IdempotencyKey.State.COMPLETED:
        return StoredResponse(
            status=row.response_status or 0,
            body=bytes(row.response_body),
            headers=dict(row.response_headers),
            replayed=True,
        )
    if row.stale:
        # The holder died without releasing (a killed worker, a lost connection). Taking over
        # is safe even if it was merely slow: it completes the key only if its claim still
        # holds, in the transaction that writes its order, and otherwise rolls all of it back.
        new_token = uuid.uuid4()
        taken = IdempotencyKey.objects.filter(
            pk=row.pk, state=IdempotencyKey.State.IN_FLIGHT, lock_token=row.lock_token
        ).update(lock_token=new_token, locked_at=Now())
        if taken:
            logger.warning("stale idempotency key taken over", extra={"idempotency_key_id": row.pk})
            return Claim(pk=row.pk, lock_token=new_token)
        return None
    raise IdempotencyKeyInUse("a request with this Idempotency-Key is being processed; retry later")


def _run_claimed(*, claim: Claim, produce: Callable[[], IdempotentResult]) -> StoredResponse:
    try:
        with transaction.atomic():
            result = produce()
            # Completed only while the claim is still this request's. The update locks the key
            # until commit: a retry that finds the claim stale meanwhile blocks in its takeover,
            # then sees the key completed and replays it. A claim already taken over rolls back
            # the order with it: the retry that took it does the work, once.
            with connection.cursor() as cursor:
                cursor.execute(
                    _COMPLETE_SQL,
                    [
                        result.response.status,
                        Jsonb(result.response.headers),
                        result.response.body,
                        result.order.pk,
                        claim.pk,
                        claim.lock_token,
                    ],
                )
                if cursor.rowcount != 1:
                    raise IdempotencyKeyInUse("this request's claim on its Idempotency-Key was taken over by a retry")
    except BaseException:
        _release(claim)
        raise
    return result.response


def _release(claim: Claim) -> None:
    """Give the key back after a failure, so that a corrected retry can use it."""
    for attempt in (1, 2):
        try:
            IdempotencyKey.objects.filter(
                pk=claim.pk, lock_token=claim.lock_token, state=IdempotencyKey.State.IN_FLIGHT
            ).delete()
            return
        except DatabaseError:
            if attempt == 1 and not connection.in_atomic_block:
                # The failure was often the connection itself (a terminated backend): once more
                # on a new one, or the client would see 409s until the claim goes stale.
                connection.close()
                continue
            # The claim stays until it goes stale, then a retry takes it over; the original
            # error is the one worth reporting.
            logger.exception("could not release an idempotency key", extra={"idempotency_key_id": claim.pk})
            return


def idempotency_keys_purge(*, batch_size: int | None = None, max_batches: int = 100) -> int:
    """Delete keys older than their time to live, one short transaction per batch so that
    the purge never holds many row locks or one long transaction. Returns how many it deleted;
    what is left past ``max_batches`` waits for the next run."""
    batch_size = batch_size or settings.IDEMPOTENCY_PURGE_BATCH_SIZE
    expired = _older_than("created_at", _ttl())
    deleted = 0
    for _ in range(max_batches):
        ids = list(IdempotencyKey.objects.filter(expired).order_by("id").values_list("id", flat=True)[:batch_size])
        if not ids:
            break
        count, _ = IdempotencyKey.objects.filter(expired, pk__in=ids).delete()
        deleted += count
        if len(ids) < batch_size:
            break
    if deleted:
        logger.info("idempotency keys purged", extra={"deleted": deleted})
    return deleted


def _ttl() -> int:
    return settings.IDEMPOTENCY_KEY_TTL_SECONDS


def _older_than(field_name: str, seconds: int) -> Q:
    return Q(**{f"{field_name}__lt": Now() - timedelta(seconds=seconds)})
