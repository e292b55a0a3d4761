"""The consistency auditor's run: plan what to look at, check it in one snapshot, record.

A run reads every context in one REPEATABLE READ transaction, so that all its queries see
the same committed state: read at two moments, a saga that completes in between would look
like a confirmed order without a charge. Violations are upserted by (kind, key); every open
violation's objects are checked again by every run, so one that is not found again is
resolved, in an incremental run as in a full one.

Incremental runs check only the orders that changed since the previous run (plus every
open violation's objects). Two kinds of change marks are used, whichever moves on each table:

* timestamps that writers actually set and that are indexed: ``Order.updated_at`` (order
  placed, confirmed, cancelled), ``SagaInstance.finished_at`` and ``created_at`` (the
  orchestrator moves ``updated_at`` only when it sends a command, not when a saga finishes);
* ids of append-only rows: ledger entries, payments, gateway charges, reservations, stock
  movements, shipments, notifications, the carrier's shipments. (Payment, Reservation and Shipment rows are also
  updated in place, but always with an append-only row of their context or while their
  saga is still running: a refund entry, a release movement, the cancel_shipment step.)

Stock is checked for every product on every run, from a checkpoint of each product's
movement sums (StockCheckpoint) plus the movements since; the live reservations behind the
reserved counts are checked reservation by reservation, with the orders that changed.

Neither mark is exact at the moment it is read: a transaction may commit, after the read,
a row whose id or timestamp is below what the read saw. So each run starts from the previous
run's start less an overlap (AUDIT_INCREMENTAL_OVERLAP_SECONDS, 300 s: more than twice the
longest transaction, Celery's hard time limit of 90 s, plus clock skew between processes):
timestamps from there, and ids above the highest id written before it (see _id_floors).
Rows seen twice cost a second check; rows never seen would be a hole. What no mark covers
(an update by hand without a new row, a shipment cancelled in place after its saga
finished) is caught by the full sweep, run at least once every 24 hours.
"""

import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, transaction

from audit.checks import (
    CHECKS,
    TABLES,
    Finding,
    Scope,
    fetch,
    saga_of_carrier_key_sql,
    saga_of_payment_key_sql,
)
from audit.models import AuditRun, Violation
from common import metrics

logger = logging.getLogger(__name__)

FULL_SWEEP_EVERY = timedelta(hours=24)
RUN_RETENTION = timedelta(days=7)
# One auditor at a time: two runs would upsert the same violations and race on resolving them.
LOCK_SQL = "SELECT pg_advisory_lock(hashtext('audit.run'))"
TRY_LOCK_SQL = "SELECT pg_try_advisory_lock(hashtext('audit.run'))"
UNLOCK_SQL = "SELECT pg_advisory_unlock(hashtext('audit.run'))"

WORK_MEM = "64MB"

# The append-only tables whose ids mark what is new since a run, and the column where each
# row records when it was written (the database's statement_timestamp(), by db_default).
WRITTEN_AT = {
    "ledger": "created_at",
    "payment": "created_at",
    "gateway": "created_at",
    "reservation": "created_at",
    "movement": "created_at",
    "shipment": "created_at",
    "notification": "sent_at",
    "carrier": "created_at",
}
WATERMARK_TABLES = tuple(WRITTEN_AT)


@dataclass(frozen=True)
class AuditReport:
    full: bool
    checked_orders: int
    findings: list[Finding]
    opened: int
    resolved: int
    duration_seconds: float
    started_at: datetime | None = None
    skipped: bool = False

    @property
    def clean(self) -> bool:
        """No violation found. Every open violation is checked again by every run, so this
        also means that none is left open."""
        return not self.skipped and not self.findings

    @property
    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(finding.kind for finding in self.findings).items()))

    def as_dict(self) -> dict[str, Any]:
        return {
            "clean": self.clean,
            "skipped": self.skipped,
            "full": self.full,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "duration_seconds": round(self.duration_seconds, 3),
            "checked_orders": self.checked_orders,
            "counts": self.counts,
            "opened": self.opened,
            "resolved": self.resolved,
            "violations": [
                {"kind": f.kind, "key": f.key, "objects": f.involved, "detail": f.detail} for f in self.findings
            ],
        }


def audit_run(*, full: bool = False, wait: bool = True) -> AuditReport:
    """Check the invariants of issue 7 and record what is broken.

    Incremental unless ``full`` or no full sweep finished in the last 24 hours. With
    ``wait=False`` a run that finds another one in progress returns at once, skipped (the
    beat task: the next tick comes soon enough).
    """
    clock = time.monotonic()
    if not _lock(wait=wait):
        logger.info("consistency audit skipped: another run is in progress")
        return AuditReport(
            full=full, checked_orders=0, findings=[], opened=0, resolved=0, duration_seconds=0.0, skipped=True
        )
    try:
        outermost = not connection.in_atomic_block
        with transaction.atomic():
            if outermost:  # inside a caller's transaction (tests) the snapshot is the caller's
                _execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            # The checks' joins of aggregates are estimated far above their real size, which
            # made PostgreSQL spend a second compiling them (JIT) for a query that runs in a
            # fraction of that; and a full sweep's aggregates spill to disk at the default
            # work_mem. Both only for this transaction.
            _execute("SET LOCAL jit = off")
            _execute(f"SET LOCAL work_mem = '{WORK_MEM}'")
            now = fetch("SELECT statement_timestamp() AS now", {})[0]["now"]
            scope, checked_orders, watermark = _plan(now=now, full=full)
            findings = _unique([finding for check in CHECKS for finding in check(scope)])
            opened, resolved = _record(findings, now=now)
            _advance_stock_checkpoint(scope, upto=watermark["stock_checkpoint"])
            AuditRun.objects.create(
                started_at=now,
                finished_at=fetch("SELECT clock_timestamp() AS now", {})[0]["now"],
                full=scope.full,
                checked_orders=checked_orders,
                violations_found=len(findings),
                resolved=resolved,
                watermark=watermark,
            )
            AuditRun.objects.filter(started_at__lt=now - RUN_RETENTION).delete()
    finally:
        _unlock()
    report = AuditReport(
        full=scope.full,
        checked_orders=checked_orders,
        findings=findings,
        opened=len(opened),
        resolved=resolved,
        duration_seconds=time.monotonic() - clock,
        started_at=now,
    )
    _log(report, opened)
    return report


def _plan(*, now: datetime, full: bool) -> tuple[Scope, int, dict[str, Any]]:
    """The scope of this run, how many orders it covers, and the watermark it leaves."""
    previous = AuditRun.objects.order_by("-started_at").first()
    since = None if full else _incremental_since(now=now, previous=previous)
    floors = _id_floors(since=since or now - overlap())
    watermark: dict[str, Any] = {
        "since": since.isoformat() if since else None,
        "id_floors": floors,
        "max_ids": _max_ids(),
        # Movements up to here are summed in StockCheckpoint once this run commits.
        "stock_checkpoint": floors["movement"],
    }
    if since is None:
        checked = fetch(f"SELECT count(*) AS n FROM {TABLES['order']}", {})[0]["n"]
        return Scope(now=now), checked, watermark
    assert previous is not None
    checkpoint = previous.watermark.get("stock_checkpoint")
    scope = _changed_scope(now=now, since=since, floors=floors, stock_checkpoint=checkpoint)
    watermark["stock_checkpoint"] = max(floors["movement"], checkpoint or 0)
    return scope, len(scope.order_ids or []), watermark


def _incremental_since(*, now: datetime, previous: AuditRun | None) -> datetime | None:
    """Where an incremental run starts: the previous run's start less the overlap; None when
    a full sweep is due (none yet, or the last one is more than a day old)."""
    last_full = AuditRun.objects.filter(full=True).order_by("-started_at").first()
    if previous is None or last_full is None or now - last_full.started_at > FULL_SWEEP_EVERY:
        return None
    return previous.started_at - overlap()


def overlap() -> timedelta:
    # Longer than twice the longest transaction (Celery's hard limit is 90 s), plus clock skew.
    return timedelta(seconds=getattr(settings, "AUDIT_INCREMENTAL_OVERLAP_SECONDS", 300))


def _max_ids() -> dict[str, int]:
    """The high-water mark of each append-only table at the snapshot, for the record."""
    columns = ", ".join(f"(SELECT coalesce(max(id), 0) FROM {TABLES[name]}) AS {name}" for name in WATERMARK_TABLES)
    return fetch(f"SELECT {columns}", {})[0]


def _id_floors(*, since: datetime) -> dict[str, int]:
    """For each append-only table, the highest id of a row written before ``since``.

    Ids are taken from a sequence in the inserting statement, whose timestamp the row
    records (``statement_timestamp()``). Any row with a lower id took it earlier still, so
    its transaction began before ``since`` = the previous run's start less the overlap, and
    ended (transactions are shorter than half the overlap) before the previous run took its
    snapshot: the previous run saw it. Only rows above the floor can be new to this run.
    PostgreSQL reads each floor backwards along the primary key, through the rows of the
    overlap window only.
    """
    columns = ", ".join(
        f"(SELECT coalesce(max(id), 0) FROM {TABLES[name]} WHERE {WRITTEN_AT[name]} < %(since)s) AS {name}"
        for name in WATERMARK_TABLES
    )
    return fetch(f"SELECT {columns}", {"since": since})[0]


_CHANGED_ORDERS = """
    SELECT id FROM {order} WHERE updated_at >= %(since)s
    UNION SELECT o.id FROM {saga} s JOIN {order} o ON o.saga_id = s.id
           WHERE s.finished_at >= %(since)s OR s.created_at >= %(since)s
    UNION SELECT order_id FROM {ledger} WHERE id > %(ledger)s
    UNION SELECT order_id FROM {payment} WHERE id > %(payment)s
    UNION SELECT order_id FROM {reservation} WHERE id > %(reservation)s
    UNION SELECT r.order_id FROM {movement} m JOIN {reservation} r ON r.id = m.reservation_id
           WHERE m.id > %(movement)s
    UNION SELECT order_id FROM {shipment} WHERE id > %(shipment)s
    UNION SELECT order_id FROM {notification} WHERE id > %(notification)s
    UNION SELECT o.id FROM {gateway} g JOIN {order} o ON o.saga_id = {gateway_saga}
           WHERE g.id > %(gateway)s
    UNION SELECT o.id FROM {gateway} g
            JOIN {gateway} c ON c.transaction_id = g.charge_transaction_id
            JOIN {order} o ON o.saga_id = {charge_saga}
           WHERE g.id > %(gateway)s AND g.kind = 'refund'
    UNION SELECT o.id FROM {carrier} c JOIN {order} o ON o.saga_id = {carrier_saga} WHERE c.id > %(carrier)s
"""

_CHANGED_SAGAS = """
    SELECT id FROM {saga}
     WHERE aggregate = 'order' AND (created_at >= %(since)s OR aggregate_id = ANY(%(order_keys)s::text[]))
"""

_CHANGED_GATEWAY_CHARGES = "SELECT id FROM {gateway} WHERE id > %(gateway)s"
_CHANGED_CARRIER_SHIPMENTS = "SELECT id FROM {carrier} WHERE id > %(carrier)s"


def _changed_scope(*, now: datetime, since: datetime, floors: dict[str, int], stock_checkpoint: int | None) -> Scope:
    """What changed since ``since``, plus the objects of every open violation."""
    params = {
        **floors,
        "since": since,
    }
    sql = _CHANGED_ORDERS.format(
        **TABLES,
        # The providers' new records name their saga only in their keys (sagas.keys).
        gateway_saga=saga_of_payment_key_sql("g.idempotency_key"),
        charge_saga=saga_of_payment_key_sql("c.idempotency_key"),
        carrier_saga=saga_of_carrier_key_sql("c.idempotency_key"),
    )
    open_objects = _open_violation_objects()
    order_ids = {row["id"] for row in fetch(sql, params)} | open_objects["order"]
    params["order_keys"] = [str(order_id) for order_id in order_ids]
    saga_ids = {str(row["id"]) for row in fetch(_CHANGED_SAGAS.format(**TABLES), params)} | open_objects["saga"]
    charge_ids = {row["id"] for row in fetch(_CHANGED_GATEWAY_CHARGES.format(**TABLES), params)}
    carrier_ids = {row["id"] for row in fetch(_CHANGED_CARRIER_SHIPMENTS.format(**TABLES), params)}
    return Scope(
        now=now,
        order_ids=sorted(order_ids),
        saga_ids=sorted(saga_ids),
        gateway_charge_ids=sorted(charge_ids | open_objects["gateway_charge"]),
        carrier_shipment_ids=sorted(carrier_ids | open_objects["carrier_shipment"]),
        stock_checkpoint=stock_checkpoint,
    )


def _open_violation_objects() -> dict[str, set]:
    """The objects of open violations, by kind of object, so that a run checks them again
    (and resolves those that were repaired) whatever changed."""
    return violation_objects(Violation.objects.filter(resolved_at__isnull=True).values_list("involved", flat=True))


def violation_objects(involved_of_each: Iterable[dict[str, Any]]) -> dict[str, set]:
    """The objects named by violations' ``involved``, by kind of object."""
    objects: dict[str, set] = {"order": set(), "saga": set(), "gateway_charge": set(), "carrier_shipment": set()}
    for involved in involved_of_each:
        for name, ids in objects.items():
            # one object under its name, or several under the plural ("carrier_shipments")
            values = [involved[name]] if involved.get(name) is not None else involved.get(f"{name}s") or []
            ids.update(str(value) if name == "saga" else int(value) for value in values)
    return objects


def _unique(findings: list[Finding]) -> list[Finding]:
    seen: dict[tuple[str, str], Finding] = {}
    for finding in findings:
        seen.setdefault((finding.kind, finding.key), finding)
    return list(seen.values())


_UPSERT = """
    INSERT INTO {violation} (kind, key, involved, detail, first_seen, last_seen, resolved_at)
    SELECT f->>'kind', f->>'key', f->'involved', f->>'detail', %(now)s, %(now)s, NULL
      FROM jsonb_array_elements(%(findings)s::jsonb) AS f
        ON CONFLICT (kind, key) DO UPDATE
       SET involved = EXCLUDED.involved,
           detail = EXCLUDED.detail,
           last_seen = EXCLUDED.last_seen,
           -- a violation that comes back after being resolved starts a new episode
           first_seen = CASE WHEN {violation}.resolved_at IS NULL THEN {violation}.first_seen
                             ELSE EXCLUDED.first_seen END,
           -- reopened (resolved, by an operator or a run, and found again): a new episode that
           -- nobody has acknowledged yet; the last resolution stays, to show what did not hold
           reopened = {violation}.reopened + (CASE WHEN {violation}.resolved_at IS NULL THEN 0 ELSE 1 END),
           acknowledged_at = CASE WHEN {violation}.resolved_at IS NULL THEN {violation}.acknowledged_at END,
           acknowledged_by = CASE WHEN {violation}.resolved_at IS NULL THEN {violation}.acknowledged_by ELSE '' END,
           acknowledgement_note = CASE WHEN {violation}.resolved_at IS NULL THEN {violation}.acknowledgement_note
                                       ELSE '' END,
           resolved_at = NULL
"""

_RESOLVE = """
    UPDATE {violation} SET resolved_at = %(now)s, resolved_by = '', resolution_reason = 'not found again by the auditor'
     WHERE resolved_at IS NULL AND last_seen < %(now)s
"""


def _record(findings: list[Finding], *, now: datetime) -> tuple[list[Finding], int]:
    """Upsert what was found; resolve the open violations that were not found again.
    Returns the findings that were not open before (new or back again) and the count resolved."""
    already_open = set(Violation.objects.filter(resolved_at__isnull=True).values_list("kind", "key"))
    opened = [finding for finding in findings if (finding.kind, finding.key) not in already_open]
    table = Violation._meta.db_table
    with connection.cursor() as cursor:
        if findings:
            payload = [{"kind": f.kind, "key": f.key, "involved": f.involved, "detail": f.detail} for f in findings]
            cursor.execute(_UPSERT.format(violation=table), {"now": now, "findings": json.dumps(payload, default=str)})
        cursor.execute(_RESOLVE.format(violation=table), {"now": now})
        resolved = cursor.rowcount
    return opened, resolved


_ADVANCE_STOCK_CHECKPOINT = """
    INSERT INTO {checkpoint} (product_id, receipts, reserved)
    SELECT p.id, coalesce(cp.receipts, 0) + coalesce(d.receipts, 0), coalesce(cp.reserved, 0) + coalesce(d.reserved, 0)
      FROM {product} p
      LEFT JOIN {checkpoint} cp ON cp.product_id = p.id AND NOT %(rebuild)s
      LEFT JOIN (SELECT m.product_id,
                        coalesce(sum(m.quantity) FILTER (WHERE m.kind = 'receipt'), 0) AS receipts,
                        coalesce(sum(CASE m.kind WHEN 'reserve' THEN m.quantity WHEN 'release' THEN -m.quantity
                                     ELSE 0 END), 0) AS reserved
                   FROM {movement} m
                  WHERE m.id > %(start)s AND m.id <= %(upto)s
                  GROUP BY m.product_id) AS d ON d.product_id = p.id
     WHERE %(rebuild)s OR d.product_id IS NOT NULL
        ON CONFLICT (product_id) DO UPDATE SET receipts = EXCLUDED.receipts, reserved = EXCLUDED.reserved
"""


def _advance_stock_checkpoint(scope: Scope, *, upto: int) -> None:
    """Add the movements up to ``upto`` to the checkpoint (every product's, from scratch, when
    the run summed every movement). Every movement up to ``upto`` is committed and visible
    (see _id_floors), so none can later appear below the checkpoint."""
    rebuild = scope.stock_checkpoint is None
    start = 0 if rebuild else scope.stock_checkpoint
    if not rebuild and upto <= start:
        return
    with connection.cursor() as cursor:
        cursor.execute(_ADVANCE_STOCK_CHECKPOINT.format(**TABLES), {"rebuild": rebuild, "start": start, "upto": upto})


def _log(report: AuditReport, opened: list[Finding]) -> None:
    # New violations one line each; those still open one line per run, so that a violation
    # nobody repairs does not write a line every 30 seconds for ever.
    for finding in opened:
        metrics.audit_violation_opened(kind=finding.kind)
        logger.error(
            "consistency violation",
            extra={"kind": finding.kind, "key": finding.key, "detail": finding.detail, "objects": finding.involved},
        )
    still_open = len(report.findings) - len(opened)
    if still_open:
        logger.error(
            "consistency violations still open", extra={"open": len(report.findings), "by_kind": report.counts}
        )
    logger.info(
        "consistency audit finished",
        extra={
            "full": report.full,
            "checked_orders": report.checked_orders,
            "violations": len(report.findings),
            "opened": report.opened,
            "resolved": report.resolved,
            "duration_ms": round(report.duration_seconds * 1000, 1),
        },
    )


def _lock(*, wait: bool) -> bool:
    if wait:
        _execute(LOCK_SQL)
        return True
    return bool(fetch(TRY_LOCK_SQL + " AS locked", {})[0]["locked"])


def _unlock() -> None:
    # A connection that died takes its session lock with it; nothing to release then.
    with contextlib.suppress(DatabaseError):
        _execute(UNLOCK_SQL)


def _execute(sql: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql)
