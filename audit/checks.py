"""The invariants the auditor checks, one function per invariant of issue 7.

Each check is a handful of set-based queries that return only the violating rows: the work
is joins and aggregates in PostgreSQL, never a Python loop over orders, so a check costs the
same few queries for ten orders or a million. A check reads all four contexts at once, which
the architecture allows the auditor; the tables are named through the models' ``_meta`` so
a rename follows, and the caller runs every check in one REPEATABLE READ snapshot, so that
two tables are never compared as they were at two different moments.

Sagas in flight are legitimately inconsistent for a moment (charged, not yet reserved), so
the per-order checks (1-4, and 7's carrier and notice checks) look only at orders whose saga
is terminal. The exceptions hold at every moment: an order has its saga from the transaction
that creates it, a gateway charge is made only for an order that exists, a shipment is
created after the charge and cancelled before the refund, and no charge is refunded twice or
beyond its amount.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection

from audit.models import StockCheckpoint, Violation
from inventory.models import Product, Reservation, ReservationLine, StockLevel, StockMovement
from inventory.models import StepOutcome as InventoryStepOutcome
from orders.models import Notification, Order, OrderLine
from orders.models import StepOutcome as OrderStepOutcome
from outbox.models import OutboxMessage
from outbox.stream import STREAM_DESTINATION
from payments.contracts import ChargePayment
from payments.models import GatewayCharge, LedgerEntry, Payment
from payments.models import StepOutcome as PaymentStepOutcome
from payments.services import provider_key
from sagas.keys import key_prefix_sql, key_sql, saga_id_in_key_sql, saga_id_text_in_key_sql, saga_keys_prefix, step_key
from sagas.models import SagaInstance, SagaStep
from shipping.contracts import CreateShipment
from shipping.models import CarrierShipment, Shipment
from shipping.models import StepOutcome as ShippingStepOutcome
from shipping.services import carrier_key

Kind = Violation.Kind

TABLES = {
    "order": Order._meta.db_table,
    "orderline": OrderLine._meta.db_table,
    "notification": Notification._meta.db_table,
    "saga": SagaInstance._meta.db_table,
    "payment": Payment._meta.db_table,
    "ledger": LedgerEntry._meta.db_table,
    "gateway": GatewayCharge._meta.db_table,
    "product": Product._meta.db_table,
    "stock": StockLevel._meta.db_table,
    "reservation": Reservation._meta.db_table,
    "reservationline": ReservationLine._meta.db_table,
    "movement": StockMovement._meta.db_table,
    "shipment": Shipment._meta.db_table,
    "sagastep": SagaStep._meta.db_table,
    "payments_outcome": PaymentStepOutcome._meta.db_table,
    "inventory_outcome": InventoryStepOutcome._meta.db_table,
    "shipping_outcome": ShippingStepOutcome._meta.db_table,
    "orders_outcome": OrderStepOutcome._meta.db_table,
    "carrier": CarrierShipment._meta.db_table,
    "outbox": OutboxMessage._meta.db_table,
    "checkpoint": StockCheckpoint._meta.db_table,
}

# The providers know our rows only by the keys we gave them, derived from the step keys
# (sagas.keys) by payments.services.provider_key and shipping.services.carrier_key. The SQL of
# those keys is generated from the same functions, so the format is written in one place.
CHARGE_STEP = ChargePayment.channel.type  # steps are named after their commands
SHIPMENT_STEP = CreateShipment.channel.type


def _charge_key(saga_id: str) -> str:
    return provider_key(step_key(saga_id, CHARGE_STEP))


def _refund_key(saga_id: str) -> str:
    return provider_key(step_key(saga_id, CHARGE_STEP, compensation=True))


def _payment_key(saga_id: str) -> str:
    """Any gateway key under a saga (its charge, refund, a late refund...), before the step."""
    return provider_key(saga_keys_prefix(saga_id))


def _carrier_key(saga_id: str) -> str:
    """Any carrier key under a saga, before the step."""
    return carrier_key(saga_keys_prefix(saga_id))


def charge_key_sql(saga_id_sql: str) -> str:
    """The gateway key of the saga's charge step."""
    return key_sql(_charge_key, saga_id_sql)


def refund_key_sql(saga_id_sql: str) -> str:
    """The gateway key of the saga's refund (the charge step's compensation)."""
    return key_sql(_refund_key, saga_id_sql)


def shipment_key_sql(saga_id_sql: str) -> str:
    """The carrier key of the saga's shipment step."""
    return key_sql(lambda saga_id: carrier_key(step_key(saga_id, SHIPMENT_STEP)), saga_id_sql)


# The saga id in a provider's key (NULL for a key that names none): for the few provider
# records of an incremental run, whose saga is then found by index.
def saga_of_payment_key_sql(column: str) -> str:
    return saga_id_in_key_sql(_payment_key, column)


def saga_of_charge_key_sql(column: str) -> str:
    return saga_id_in_key_sql(_charge_key, column, exact=True)


def saga_of_carrier_key_sql(column: str) -> str:
    return saga_id_in_key_sql(_carrier_key, column)


# The fragments the queries below name, formatted in with the table names.
KEYS = {
    "subject_charge_key": charge_key_sql("subject.saga_id"),
    "subject_refund_key": refund_key_sql("subject.saga_id"),
    "subject_shipment_key": shipment_key_sql("subject.saga_id"),
    "claims_charge_key": charge_key_sql("claims.saga_id"),
    "saga_of_refunded_charge": saga_of_charge_key_sql("refunded.idempotency_key"),
    "saga_of_carrier_key": saga_of_carrier_key_sql("c.idempotency_key"),
    "saga_text_of_carrier_key": saga_id_text_in_key_sql(_carrier_key, "c.idempotency_key"),
    "is_carrier_key_of_a_saga": key_prefix_sql(_carrier_key, "c.idempotency_key"),
    "carrier_key_of_shipment": key_sql(carrier_key, "sh.idempotency_key"),
}

LIVE_SHIPMENT = "('created', 'dispatched')"
TERMINAL = "('completed', 'compensated', 'failed')"


@dataclass(frozen=True)
class Finding:
    """A violation seen by one run: ``key`` names the object it is about, "<what>:<id>"."""

    kind: str
    key: str
    involved: dict[str, Any]
    detail: str


@dataclass(frozen=True)
class Scope:
    """What one run looks at. ``None`` means everything (a full sweep); a list limits the
    checks to those objects (an incremental run: what changed, plus every open violation)."""

    now: datetime
    order_ids: list[int] | None = None
    saga_ids: list[str] | None = None
    gateway_charge_ids: list[int] | None = None
    carrier_shipment_ids: list[int] | None = None
    # Stock movements up to this id are summed in StockCheckpoint; None: sum them all.
    stock_checkpoint: int | None = None

    @property
    def full(self) -> bool:
        return self.order_ids is None

    def sql_params(self) -> dict[str, Any]:
        return {
            "order_ids": self.order_ids or [],
            "saga_ids": self.saga_ids or [],
            "gateway_charge_ids": self.gateway_charge_ids or [],
            "carrier_shipment_ids": self.carrier_shipment_ids or [],
            "stock_checkpoint": self.stock_checkpoint or 0,
        }

    def orders(self, column: str) -> str:
        return "TRUE" if self.order_ids is None else f"{column} = ANY(%(order_ids)s::bigint[])"

    def sagas(self, column: str) -> str:
        return "TRUE" if self.saga_ids is None else f"{column} = ANY(%(saga_ids)s::uuid[])"

    def gateway_charges(self, column: str) -> str:
        return "TRUE" if self.gateway_charge_ids is None else f"{column} = ANY(%(gateway_charge_ids)s::bigint[])"

    def carrier_shipments(self, column: str) -> str:
        return "TRUE" if self.carrier_shipment_ids is None else f"{column} = ANY(%(carrier_shipment_ids)s::bigint[])"


def fetch(sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        columns = [column.name for column in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def _query(template: str, scope: Scope, **where: str) -> list[dict[str, Any]]:
    return fetch(template.format(**TABLES, **KEYS, **where), scope.sql_params())


def _order_finding(kind: str, row: dict[str, Any], detail: str, **involved: Any) -> Finding:
    return Finding(
        kind=kind,
        key=f"order:{row['order_id']}",
        involved={"order": row["order_id"], "saga": str(row["saga_id"]), **involved},
        detail=detail,
    )


# ---------------------------------------------------------------------------
# 1. Every order has exactly one saga; every terminal saga agrees with its order's status.
# ---------------------------------------------------------------------------

_ORDER_WITHOUT_SAGA = """
    SELECT o.id AS order_id, o.saga_id, s.id IS NOT NULL AS saga_exists, s.aggregate, s.aggregate_id
      FROM {order} o
      LEFT JOIN {saga} s ON s.id = o.saga_id
     WHERE {in_scope} AND (s.id IS NULL OR s.aggregate <> 'order' OR s.aggregate_id <> o.id::text)
"""

# A second saga for an order cannot point to it by id (saga_id is unique per order), so it
# shows here as a saga whose order names another saga.
_SAGA_WITHOUT_ORDER = """
    SELECT s.id AS saga_id, s.aggregate_id, s.state, o.id AS order_id, o.saga_id AS order_saga_id
      FROM {saga} s
      LEFT JOIN {order} o
        ON o.id = (CASE WHEN s.aggregate_id ~ '^[0-9]{{1,18}}$' THEN s.aggregate_id::bigint END)
     WHERE s.aggregate = 'order' AND {in_scope} AND (o.id IS NULL OR o.saga_id <> s.id)
"""

_SAGA_DISAGREES = """
    SELECT o.id AS order_id, o.status, s.id AS saga_id, s.state, s.current_step, s.failure_reason
      FROM {order} o
      JOIN {saga} s ON s.id = o.saga_id
     WHERE {in_scope} AND s.state IN {terminal}
       AND NOT (s.state = 'completed' AND o.status = 'confirmed')
       AND NOT (s.state = 'compensated' AND o.status = 'cancelled')
"""


def check_order_saga_links(scope: Scope) -> list[Finding]:
    """Invariant 1, and failed sagas: a failed compensation may hold the customer's money."""
    findings = []
    for row in _query(_ORDER_WITHOUT_SAGA, scope, in_scope=scope.orders("o.id")):
        if row["saga_exists"]:
            detail = f"its saga {row['saga_id']} belongs to {row['aggregate']} {row['aggregate_id']}"
        else:
            detail = f"its saga {row['saga_id']} does not exist"
        findings.append(_order_finding(Kind.ORDER_WITHOUT_SAGA, row, f"order {row['order_id']}: {detail}"))
    for row in _query(_SAGA_WITHOUT_ORDER, scope, in_scope=scope.sagas("s.id")):
        if row["order_id"] is None:
            detail = f"saga {row['saga_id']} ({row['state']}) is for order {row['aggregate_id']}, which does not exist"
        else:
            detail = (
                f"saga {row['saga_id']} ({row['state']}) is for order {row['order_id']}, "
                f"whose saga is {row['order_saga_id']}: the order has two sagas"
            )
        findings.append(
            Finding(
                kind=Kind.SAGA_WITHOUT_ORDER,
                key=f"saga:{row['saga_id']}",
                involved={"saga": str(row["saga_id"]), "order": row["order_id"]},
                detail=detail,
            )
        )
    for row in _query(_SAGA_DISAGREES, scope, in_scope=scope.orders("o.id"), terminal=TERMINAL):
        if row["state"] == "failed":
            findings.append(
                _order_finding(
                    Kind.SAGA_FAILED,
                    row,
                    f"saga failed at {row['current_step'] or '-'}: {row['failure_reason'] or 'no reason recorded'}",
                )
            )
        if row["state"] != "failed" or row["status"] == "confirmed":
            findings.append(
                _order_finding(
                    Kind.SAGA_ORDER_STATUS_MISMATCH,
                    row,
                    f"the saga is {row['state']} but the order is {row['status']}",
                    status=row["status"],
                    state=row["state"],
                )
            )
    return findings


# ---------------------------------------------------------------------------
# Per-order facts shared by invariants 2 and 3, over a "subject" CTE of (id, saga_id, ...).
# ---------------------------------------------------------------------------

_ORDER_FACTS = """
    ledger AS (
        SELECT l.order_id,
               count(*) FILTER (WHERE l.kind = 'charge') AS charges,
               coalesce(sum(l.amount) FILTER (WHERE l.kind = 'charge'), 0) AS charged,
               count(*) FILTER (WHERE l.kind = 'charge' AND l.currency <> subject.currency) AS foreign_charges,
               count(*) FILTER (WHERE l.kind = 'refund') AS refunds,
               coalesce(sum(l.amount) FILTER (WHERE l.kind = 'refund'), 0) AS refunded
          FROM subject JOIN {ledger} l ON l.order_id = subject.id
         GROUP BY l.order_id
    ),
    wanted AS (
        SELECT ol.order_id, p.id AS product_id, ol.quantity AS qty
          FROM subject
          JOIN {orderline} ol ON ol.order_id = subject.id
          LEFT JOIN {product} p ON p.sku = ol.sku
    ),
    reservations AS (
        SELECT r.id, r.order_id, r.status FROM subject JOIN {reservation} r ON r.order_id = subject.id
    ),
    held AS (
        SELECT r.order_id, rl.product_id, sum(rl.quantity) AS qty
          FROM reservations r JOIN {reservationline} rl ON rl.reservation_id = r.id
         WHERE r.status = 'reserved'
         GROUP BY r.order_id, rl.product_id
    ),
    moved AS (
        SELECT r.order_id, m.product_id,
               sum(CASE m.kind WHEN 'reserve' THEN m.quantity WHEN 'release' THEN -m.quantity ELSE 0 END) AS qty,
               count(*) FILTER (WHERE m.kind = 'reserve') AS reserves
          FROM reservations r JOIN {movement} m ON m.reservation_id = r.id
         GROUP BY r.order_id, m.product_id
    ),
    per_product AS (
        SELECT order_id, product_id, sum(w) AS wanted, sum(h) AS held, sum(m) AS moved, sum(n) AS reserves
          FROM (SELECT order_id, product_id, qty AS w, 0 AS h, 0 AS m, 0 AS n FROM wanted
                UNION ALL SELECT order_id, product_id, 0, qty, 0, 0 FROM held
                UNION ALL SELECT order_id, product_id, 0, 0, qty, reserves FROM moved) AS lines
         GROUP BY order_id, product_id
    ),
    stock AS (
        SELECT order_id,
               -- confirmed: each line reserved once, by live reservations and by movements
               count(*) FILTER (WHERE product_id IS NULL OR wanted <> held OR wanted <> moved) AS lines_off,
               -- cancelled: nothing held, nothing left reserved by movements
               count(*) FILTER (WHERE held <> 0 OR moved <> 0) AS lines_held,
               sum(reserves) AS reserves
          FROM per_product GROUP BY order_id
    ),
    live_reservations AS (
        SELECT order_id, count(*) FILTER (WHERE status = 'reserved') AS live,
               array_agg(id ORDER BY id) FILTER (WHERE status = 'reserved') AS ids
          FROM reservations GROUP BY order_id
    ),
    shipments AS (
        SELECT sh.order_id, count(*) FILTER (WHERE sh.status IN {live_shipment}) AS live,
               array_agg(sh.id ORDER BY sh.id) FILTER (WHERE sh.status IN {live_shipment}) AS ids
          FROM subject JOIN {shipment} sh ON sh.order_id = subject.id
         GROUP BY sh.order_id
    ),
    mail AS (
        SELECT n.order_id,
               count(*) FILTER (WHERE n.kind = 'confirmation') AS confirmations,
               count(*) FILTER (WHERE n.kind = 'cancellation') AS cancellations
          FROM subject JOIN {notification} n ON n.order_id = subject.id
         GROUP BY n.order_id
    ),
    order_charges AS (
        -- The gateway's charges of the order: the one under the saga's charge key, and any our
        -- ledger books for the order (made by hand in the provider's console, or landed late).
        SELECT subject.id AS order_id, c.transaction_id, c.amount
          FROM subject JOIN {gateway} c ON c.idempotency_key = {subject_charge_key}
         WHERE c.kind = 'charge' AND c.succeeded
        UNION
        SELECT subject.id, c.transaction_id, c.amount
          FROM subject
          JOIN {ledger} l ON l.order_id = subject.id AND l.kind = 'charge'
          JOIN {gateway} c ON c.transaction_id = l.provider_reference
         WHERE c.kind = 'charge' AND c.succeeded
    ),
    gateway AS (
        -- ...and their refunds, under whichever key they were made.
        SELECT oc.order_id, true AS charged, sum(oc.amount) AS charged_amount,
               coalesce(sum(r.refunded), 0) AS refunded_amount
          FROM order_charges oc
          LEFT JOIN (SELECT charge_transaction_id, sum(amount) AS refunded FROM {gateway}
                      WHERE kind = 'refund' AND succeeded GROUP BY charge_transaction_id) r
            ON r.charge_transaction_id = oc.transaction_id
         GROUP BY oc.order_id
    ),
    facts AS (
        SELECT subject.id AS order_id, subject.saga_id, subject.total_amount, subject.currency,
               coalesce(ledger.charges, 0) AS charges, coalesce(ledger.charged, 0) AS charged,
               coalesce(ledger.foreign_charges, 0) AS foreign_charges,
               coalesce(ledger.refunds, 0) AS refunds, coalesce(ledger.refunded, 0) AS refunded,
               coalesce(gateway.charged, false) AS gateway_charged,
               coalesce(gateway.charged_amount, 0) AS gateway_charged_amount,
               coalesce(gateway.refunded_amount, 0) AS gateway_refunded_amount,
               coalesce(stock.lines_off, 0) AS lines_off, coalesce(stock.lines_held, 0) AS lines_held,
               coalesce(stock.reserves, 0) AS reserves,
               coalesce(live_reservations.live, 0) AS live_reservations, live_reservations.ids AS reservation_ids,
               coalesce(shipments.live, 0) AS live_shipments, shipments.ids AS shipment_ids,
               coalesce(mail.confirmations, 0) AS confirmations, coalesce(mail.cancellations, 0) AS cancellations
          FROM subject
          LEFT JOIN ledger ON ledger.order_id = subject.id
          LEFT JOIN gateway ON gateway.order_id = subject.id
          LEFT JOIN stock ON stock.order_id = subject.id
          LEFT JOIN live_reservations ON live_reservations.order_id = subject.id
          LEFT JOIN shipments ON shipments.order_id = subject.id
          LEFT JOIN mail ON mail.order_id = subject.id
    )
"""

_SUBJECT = """
    subject AS (
        SELECT o.id, o.saga_id, o.total_amount, o.currency
          FROM {order} o JOIN {saga} s ON s.id = o.saga_id
         WHERE {in_scope} AND o.status = %(status)s AND s.state = %(state)s
    )
"""


def _order_facts(scope: Scope, *, status: str, state: str, where: str) -> list[dict[str, Any]]:
    sql = "WITH " + _SUBJECT + "," + _ORDER_FACTS + f" SELECT * FROM facts WHERE {where}"
    template = sql.format(**TABLES, **KEYS, in_scope=scope.orders("o.id"), live_shipment=LIVE_SHIPMENT)
    return fetch(template, {**scope.sql_params(), "status": status, "state": state})


# ---------------------------------------------------------------------------
# 2. A confirmed order: one successful charge equal to its total, no refund, stock reserved
#    for each line exactly once, one live shipment, one confirmation email.
# ---------------------------------------------------------------------------

# A charge refunded on a confirmed order is allowed only as a second charge given back (one
# landed late, or made by hand twice): what counts is one live charge of the order's total.
_CONFIRMED_BROKEN = """
    charges - refunds <> 1 OR charged - refunded <> total_amount OR foreign_charges > 0
    OR lines_off > 0 OR live_reservations <> 1 OR live_shipments <> 1
    OR confirmations <> 1 OR cancellations > 0
"""


def check_confirmed_orders(scope: Scope) -> list[Finding]:
    findings = []
    for row in _order_facts(scope, status="confirmed", state="completed", where=_CONFIRMED_BROKEN):
        net = row["charged"] - row["refunded"]
        if row["refunds"] and net < row["total_amount"]:
            findings.append(
                _order_finding(
                    Kind.CONFIRMED_REFUNDED,
                    row,
                    f"{row['refunds']} refund(s) of {row['refunded']} {row['currency']} on a confirmed order",
                )
            )
        elif row["charges"] - row["refunds"] != 1 or net != row["total_amount"] or row["foreign_charges"]:
            findings.append(
                _order_finding(
                    Kind.CONFIRMED_NOT_CHARGED_ONCE,
                    row,
                    f"{row['charges']} charge(s) in the ledger for {row['charged']} "
                    f"({row['foreign_charges']} in another currency); the order's total is "
                    f"{row['total_amount']} {row['currency']}",
                )
            )
        if row["lines_off"] or row["live_reservations"] != 1:
            findings.append(
                _order_finding(
                    Kind.CONFIRMED_STOCK_WRONG,
                    row,
                    f"{row['live_reservations']} live reservation(s); {row['lines_off']} product(s) whose ordered, "
                    "reserved and moved quantities differ",
                    reservations=row["reservation_ids"] or [],
                )
            )
        if row["live_shipments"] != 1:
            findings.append(
                _order_finding(
                    Kind.CONFIRMED_SHIPMENT_NOT_ONE,
                    row,
                    f"{row['live_shipments']} live shipment(s)",
                    shipments=row["shipment_ids"] or [],
                )
            )
        if row["confirmations"] != 1 or row["cancellations"]:
            findings.append(
                _order_finding(
                    Kind.CONFIRMED_EMAIL_NOT_ONE,
                    row,
                    f"{row['confirmations']} confirmation email(s) and {row['cancellations']} cancellation notice(s)",
                )
            )
    return findings


# ---------------------------------------------------------------------------
# 3. A cancelled order: charges minus refunds is zero (in our ledger and at the gateway), no
#    live reservation, no live shipment, one cancellation notice if anything had been
#    charged or reserved.
# ---------------------------------------------------------------------------

_CANCELLED_BROKEN = """
    charged <> refunded OR gateway_charged_amount <> gateway_refunded_amount
    OR live_reservations > 0 OR lines_held > 0 OR live_shipments > 0 OR confirmations > 0
    OR ((charges > 0 OR gateway_charged OR reserves > 0) AND cancellations <> 1)
"""


def check_cancelled_orders(scope: Scope) -> list[Finding]:
    findings = []
    for row in _order_facts(scope, status="cancelled", state="compensated", where=_CANCELLED_BROKEN):
        ledger_net = row["charged"] - row["refunded"]
        gateway_net = row["gateway_charged_amount"] - row["gateway_refunded_amount"]
        if ledger_net or gateway_net:
            findings.append(
                _order_finding(
                    Kind.CANCELLED_MONEY_HELD,
                    row,
                    f"charged minus refunded is {ledger_net} in our ledger and {gateway_net} at the gateway "
                    f"({row['currency']})",
                )
            )
        if row["live_reservations"] or row["lines_held"]:
            findings.append(
                _order_finding(
                    Kind.CANCELLED_STOCK_HELD,
                    row,
                    f"{row['live_reservations']} live reservation(s); {row['lines_held']} product(s) still reserved "
                    "by movements",
                    reservations=row["reservation_ids"] or [],
                )
            )
        if row["live_shipments"]:
            findings.append(
                _order_finding(
                    Kind.CANCELLED_SHIPMENT_LIVE,
                    row,
                    f"{row['live_shipments']} live shipment(s)",
                    shipments=row["shipment_ids"] or [],
                )
            )
        touched = row["charges"] > 0 or row["gateway_charged"] or row["reserves"] > 0
        if row["confirmations"] or (touched and row["cancellations"] != 1):
            findings.append(
                _order_finding(
                    Kind.CANCELLED_NOTICE_WRONG,
                    row,
                    f"{row['cancellations']} cancellation notice(s) and {row['confirmations']} confirmation email(s)"
                    + ("; money was charged or stock reserved" if touched else ""),
                )
            )
    return findings


# ---------------------------------------------------------------------------
# 4. No charge without an order; no shipment without a captured payment; no payment charged
#    twice (the gateway's charges agree with our ledger).
# ---------------------------------------------------------------------------

# A charge's key must be the charge step key of an existing order's saga. A charge under any
# other key (a key derived differently, a second charge for one order) has no order to bill.
# A full sweep joins every charge to the key each order's saga would use; an incremental run,
# with a few charges, reads the saga id out of each key instead and finds its order by index
# (the pattern guards the cast; it costs too much to run on every charge of a full sweep).
_CHARGE_WITHOUT_ORDER = """
    SELECT g.id, g.idempotency_key, g.transaction_id, g.amount, g.currency
      FROM {gateway} g
      LEFT JOIN {order} o ON {order_of_charge}
     WHERE g.kind = 'charge' AND g.succeeded AND o.id IS NULL AND {in_scope}
       -- A charge made by hand is the order's whose ledger books it.
       AND NOT EXISTS (SELECT 1 FROM {ledger} l WHERE l.provider_reference = g.transaction_id AND l.kind = 'charge')
"""
_ORDER_OF_CHARGE_BY_KEY = f"{charge_key_sql('o.saga_id')} = g.idempotency_key"
_ORDER_OF_CHARGE_BY_SAGA = f"o.saga_id = {saga_of_charge_key_sql('g.idempotency_key')}"

# Every successful gateway movement under the order's keys must be one ledger entry (same
# kind, reference and amount) and every ledger entry one gateway movement; a payment's status
# must agree with its entries. Sides are counted +1 (gateway) and -1 (ledger) per movement.
_LEDGER_DISAGREES = """
    WITH subject AS (
        SELECT o.id, o.saga_id
          FROM {order} o JOIN {saga} s ON s.id = o.saga_id
         WHERE {in_scope} AND s.state IN {terminal}
    ),
    charges AS (
        -- The order's charges at the gateway: under the saga's charge key, or booked by our
        -- ledger (by hand, or late), each once.
        SELECT subject.id AS order_id, g.transaction_id, g.amount, g.currency
          FROM subject JOIN {gateway} g ON g.idempotency_key = {subject_charge_key}
         WHERE g.succeeded AND g.kind = 'charge'
        UNION
        SELECT subject.id, g.transaction_id, g.amount, g.currency
          FROM subject
          JOIN {ledger} l ON l.order_id = subject.id AND l.kind = 'charge'
          JOIN {gateway} g ON g.transaction_id = l.provider_reference
         WHERE g.succeeded AND g.kind = 'charge'
    ),
    refunds AS (
        -- Their refunds, under whichever key they were made (the saga's, an operator's, a late
        -- one), and whatever the saga's refund key holds (a refund of a charge never taken).
        SELECT charges.order_id, r.transaction_id, r.amount, r.currency
          FROM charges JOIN {gateway} r ON r.charge_transaction_id = charges.transaction_id
         WHERE r.succeeded AND r.kind = 'refund'
        UNION
        SELECT subject.id, r.transaction_id, r.amount, r.currency
          FROM subject
          JOIN {gateway} r ON r.idempotency_key = {subject_refund_key}
         WHERE r.succeeded AND r.kind = 'refund'
    ),
    movements AS (
        SELECT order_id, 'charge' AS kind, transaction_id AS reference, amount, currency, 1 AS side FROM charges
        UNION ALL
        SELECT order_id, 'refund', transaction_id, amount, currency, 1 FROM refunds
        UNION ALL
        SELECT l.order_id, l.kind, l.provider_reference, l.amount, l.currency, -1
          FROM subject JOIN {ledger} l ON l.order_id = subject.id
    ),
    unmatched AS (
        SELECT order_id,
               json_build_object('kind', kind, 'reference', reference, 'amount', amount,
                                 'currency', currency, 'surplus', sum(side)) AS problem
          FROM movements
         GROUP BY order_id, kind, reference, amount, currency
        HAVING sum(side) <> 0
    ),
    payments AS (
        SELECT p.order_id, p.id, p.status,
               count(l.id) FILTER (WHERE l.kind = 'charge') AS charges,
               count(l.id) FILTER (WHERE l.kind = 'refund') AS refunds
          FROM subject
          JOIN {payment} p ON p.order_id = subject.id
          LEFT JOIN {ledger} l ON l.payment_id = p.id
         GROUP BY p.order_id, p.id, p.status
    ),
    wrong_payments AS (
        SELECT order_id,
               json_build_object('payment', id, 'status', status, 'charges', charges, 'refunds', refunds) AS problem
          FROM payments
         WHERE NOT ((status = 'charged' AND charges = 1 AND refunds = 0)
                 OR (status = 'refunded' AND charges = 1 AND refunds = 1)
                 OR (status = 'voided' AND charges = 0 AND refunds = 0))
    ),
    problems AS (
        SELECT order_id, problem, 'unmatched' AS what FROM unmatched
        UNION ALL
        SELECT order_id, problem, 'payment' FROM wrong_payments
    )
    SELECT problems.order_id, subject.saga_id,
           coalesce(json_agg(problem) FILTER (WHERE what = 'unmatched'), '[]') AS unmatched,
           coalesce(json_agg(problem) FILTER (WHERE what = 'payment'), '[]') AS payments
      FROM problems JOIN subject ON subject.id = problems.order_id
     GROUP BY problems.order_id, subject.saga_id
"""

# The shipment step runs after the charge and is compensated before the refund, so a live
# shipment has a captured payment at every moment, whatever state its saga is in.
_SHIPMENT_WITHOUT_PAYMENT = """
    SELECT sh.id, sh.order_id, sh.status
      FROM {shipment} sh
     WHERE sh.status IN {live_shipment} AND {in_scope}
       AND NOT EXISTS (
           SELECT 1 FROM {payment} p JOIN {ledger} l ON l.payment_id = p.id AND l.kind = 'charge'
            WHERE p.order_id = sh.order_id AND p.status = 'charged')
"""


def check_money_and_shipments(scope: Scope) -> list[Finding]:
    findings = []
    order_of_charge = _ORDER_OF_CHARGE_BY_KEY if scope.full else _ORDER_OF_CHARGE_BY_SAGA
    for row in _query(
        _CHARGE_WITHOUT_ORDER, scope, in_scope=scope.gateway_charges("g.id"), order_of_charge=order_of_charge
    ):
        findings.append(
            Finding(
                kind=Kind.CHARGE_WITHOUT_ORDER,
                key=f"gateway_charge:{row['id']}",
                involved={"gateway_charge": row["id"], "transaction_id": row["transaction_id"]},
                detail=(
                    f"gateway charge {row['transaction_id']} of {row['amount']} {row['currency']} under key "
                    f"{row['idempotency_key']!r} belongs to no order's charge step"
                ),
            )
        )
    for row in _query(_LEDGER_DISAGREES, scope, in_scope=scope.orders("o.id"), terminal=TERMINAL):
        parts = []
        for problem in row["unmatched"]:
            side = (
                "at the gateway, not in our ledger" if problem["surplus"] > 0 else "in our ledger, not at the gateway"
            )
            times = abs(problem["surplus"])
            parts.append(
                f"{problem['kind']} {problem['reference']} of {problem['amount']} {problem['currency']} {side}"
                + (f" ({times} times)" if times > 1 else "")
            )
        for problem in row["payments"]:
            parts.append(
                f"payment {problem['payment']} is {problem['status']} with {problem['charges']} charge(s) and "
                f"{problem['refunds']} refund(s) in the ledger"
            )
        findings.append(
            _order_finding(
                Kind.PAYMENT_LEDGER_MISMATCH,
                row,
                "; ".join(parts),
                references=sorted({p["reference"] for p in row["unmatched"]}),
                payments=sorted({p["payment"] for p in row["payments"]}),
            )
        )
    for row in _query(
        _SHIPMENT_WITHOUT_PAYMENT, scope, in_scope=scope.orders("sh.order_id"), live_shipment=LIVE_SHIPMENT
    ):
        findings.append(
            Finding(
                kind=Kind.SHIPMENT_WITHOUT_PAYMENT,
                key=f"shipment:{row['id']}",
                involved={"shipment": row["id"], "order": row["order_id"]},
                detail=f"shipment {row['id']} ({row['status']}) of order {row['order_id']} has no captured payment",
            )
        )
    return findings


# ---------------------------------------------------------------------------
# 5. Stock: for each product, on hand and reserved equal the sum of its movements and of its
#    live reservations; never negative.
# ---------------------------------------------------------------------------

# Every product, every run (the product table is small): the level against its movements.
# A full sweep sums every movement and also every live reservation line; an incremental run
# adds the movements since the checkpoint to the checkpoint's sums. Live reservations are
# then covered reservation by reservation (below): when each reservation's movements agree
# with its lines, the movements' sum is the sum of the live reservations.
_STOCK_DISAGREES = """
    WITH moves AS (
        SELECT m.product_id,
               coalesce(sum(m.quantity) FILTER (WHERE m.kind = 'receipt'), 0) AS receipts,
               coalesce(sum(CASE m.kind WHEN 'reserve' THEN m.quantity WHEN 'release' THEN -m.quantity ELSE 0 END),
                        0) AS reserved
          FROM {movement} m
         WHERE m.id > %(stock_checkpoint)s
         GROUP BY m.product_id
    ),
    held AS ({held}),
    sums AS (
        SELECT p.id, p.sku,
               coalesce(cp.receipts, 0) + coalesce(moves.receipts, 0) AS receipts,
               coalesce(cp.reserved, 0) + coalesce(moves.reserved, 0) AS net_reserved
          FROM {product} p
          LEFT JOIN {checkpoint} cp ON cp.product_id = p.id AND %(use_checkpoint)s
          LEFT JOIN moves ON moves.product_id = p.id
    )
    SELECT sums.id, sums.sku, sums.receipts, sums.net_reserved, held.held,
           sl.product_id IS NOT NULL AS has_level, sl.on_hand, sl.reserved
      FROM sums
      LEFT JOIN {stock} sl ON sl.product_id = sums.id
      LEFT JOIN held ON held.product_id = sums.id
     WHERE (sl.product_id IS NULL AND (sums.receipts <> 0 OR sums.net_reserved <> 0 OR held.held IS NOT NULL))
        OR sl.on_hand <> sums.receipts
        OR sl.reserved <> sums.net_reserved
        OR (%(check_held)s AND sl.reserved <> coalesce(held.held, 0))
        OR sl.reserved < 0 OR sl.on_hand < sl.reserved
"""
_HELD_BY_PRODUCT = """
        SELECT rl.product_id, sum(rl.quantity) AS held
          FROM {reservationline} rl JOIN {reservation} r ON r.id = rl.reservation_id
         WHERE r.status = 'reserved'
         GROUP BY rl.product_id
"""
_NOTHING_HELD = "SELECT NULL::bigint AS product_id, NULL::bigint AS held WHERE FALSE"

# A live reservation holds exactly its lines (reserved once, never released); a released
# one either never reserved anything (a tombstone) or released all it reserved.
_RESERVATION_DISAGREES = """
    WITH res AS (SELECT r.id, r.order_id, r.status FROM {reservation} r WHERE {in_scope}),
    per_product AS (
        SELECT reservation_id, product_id, sum(line) AS line, sum(reserved) AS reserved, sum(released) AS released
          FROM (SELECT rl.reservation_id, rl.product_id, rl.quantity AS line, 0 AS reserved, 0 AS released
                  FROM res JOIN {reservationline} rl ON rl.reservation_id = res.id
                UNION ALL
                SELECT m.reservation_id, m.product_id, 0,
                       CASE m.kind WHEN 'reserve' THEN m.quantity ELSE 0 END,
                       CASE m.kind WHEN 'release' THEN m.quantity ELSE 0 END
                  FROM res JOIN {movement} m ON m.reservation_id = res.id) AS rows
         GROUP BY reservation_id, product_id
    )
    SELECT res.id, res.order_id, res.status, count(*) AS products_off
      FROM res JOIN per_product pp ON pp.reservation_id = res.id
     WHERE (res.status = 'reserved' AND (pp.reserved <> pp.line OR pp.released <> 0))
        OR (res.status = 'released' AND (pp.released <> pp.reserved OR pp.reserved NOT IN (0, pp.line)))
        OR res.status NOT IN ('reserved', 'released')
     GROUP BY res.id, res.order_id, res.status
"""


def check_stock(scope: Scope) -> list[Finding]:
    findings = []
    params = {**scope.sql_params(), "use_checkpoint": scope.stock_checkpoint is not None, "check_held": scope.full}
    held = _HELD_BY_PRODUCT.format(**TABLES) if scope.full else _NOTHING_HELD
    for row in fetch(_STOCK_DISAGREES.format(**TABLES, held=held), params):
        if row["has_level"]:
            detail = (
                f"{row['sku']}: on hand {row['on_hand']} (receipts {row['receipts']}), reserved {row['reserved']} "
                f"(movements {row['net_reserved']}"
                + (f", live reservations {row['held'] or 0})" if scope.full else ")")
            )
        else:
            detail = f"{row['sku']} has movements or reservations but no stock level"
        findings.append(
            Finding(
                kind=Kind.STOCK_MISMATCH,
                key=f"product:{row['id']}",
                involved={"product": row["id"], "sku": row["sku"]},
                detail=detail,
            )
        )
    for row in _query(_RESERVATION_DISAGREES, scope, in_scope=scope.orders("r.order_id")):
        findings.append(
            Finding(
                kind=Kind.RESERVATION_MISMATCH,
                key=f"reservation:{row['id']}",
                involved={"reservation": row["id"], "order": row["order_id"]},
                detail=(
                    f"reservation {row['id']} of order {row['order_id']} is {row['status']}, but its movements "
                    f"disagree with its lines for {row['products_off']} product(s)"
                ),
            )
        )
    return findings


# ---------------------------------------------------------------------------
# 6. No saga running past its deadline without being flagged stuck; no outbox message
#    unpublished for longer than a threshold. Both read only a partial index, so they look
#    at everything on every run.
# ---------------------------------------------------------------------------

_OVERDUE_SAGAS = """
    SELECT id, state, current_step, attempt, step_deadline, aggregate, aggregate_id
      FROM {saga}
     WHERE state IN ('running', 'compensating') AND step_deadline < %(overdue_before)s AND NOT stuck
"""

# available_at, not created_at: a retry published with a delay is not late before it is due,
# and a replayed dead letter is due again from its replay.
_STALE_OUTBOX = """
    SELECT destination, count(*) AS messages, min(id) AS oldest_id, min(available_at) AS oldest_due
      FROM {outbox}
     WHERE published_at IS NULL AND available_at < %(stale_before)s
     GROUP BY destination
"""


def deadline_grace() -> timedelta:
    # The sweeper flags an overdue saga within one sweep (5 s); this leaves it several.
    return timedelta(seconds=getattr(settings, "AUDIT_SAGA_DEADLINE_GRACE_SECONDS", 60))


def outbox_max_age() -> timedelta:
    return timedelta(seconds=getattr(settings, "AUDIT_OUTBOX_MAX_AGE_SECONDS", 60))


def check_liveness(scope: Scope) -> list[Finding]:
    findings = []
    params = {"overdue_before": scope.now - deadline_grace(), "stale_before": scope.now - outbox_max_age()}
    for row in fetch(_OVERDUE_SAGAS.format(**TABLES), params):
        late = (scope.now - row["step_deadline"]).total_seconds()
        findings.append(
            Finding(
                kind=Kind.SAGA_OVERDUE_NOT_STUCK,
                key=f"saga:{row['id']}",
                involved={"saga": str(row["id"]), "aggregate": f"{row['aggregate']}:{row['aggregate_id']}"},
                detail=(
                    f"{row['state']} at {row['current_step']} attempt {row['attempt']}, {late:.0f} s past its "
                    "deadline and not flagged stuck (is the sweeper running?)"
                ),
            )
        )
    for row in fetch(_STALE_OUTBOX.format(**TABLES), params):
        age = (scope.now - row["oldest_due"]).total_seconds()
        findings.append(
            Finding(
                kind=Kind.OUTBOX_STALE,
                key=f"outbox:{row['destination']}",
                # One violation per destination, not per message: a stopped relay must not
                # turn into a million rows here.
                involved={"destination": row["destination"], "oldest_message": row["oldest_id"]},
                detail=(
                    f"{row['messages']} message(s) to {row['destination']} due and unpublished; the oldest "
                    f"(id {row['oldest_id']}) for {age:.0f} s "
                    + (
                        "(is the relay running, and the event stream reachable?)"
                        if row["destination"] == STREAM_DESTINATION
                        else "(is the relay running?)"
                    )
                ),
            )
        )
    return findings


# ---------------------------------------------------------------------------
# 7. The providers' own books, and what the customer was told. Our tables can agree with each
#    other while a provider holds what they do not know of: a shipment the carrier booked
#    after its step was compensated, a refund made in the gateway's console or by a replayed
#    command. So these checks read the carrier's and the gateway's records themselves.
# ---------------------------------------------------------------------------

# The carrier's shipments of finished sagas, by the saga id in their key: the canonical one,
# 'ship:<saga id>:create_shipment', and any other key under the saga (a late undo, a retry
# under a derived key). A full sweep joins on the key's text, which hashes; an incremental
# run, with a few orders, finds their canonical shipment by its unique key, and the other
# shipments among those new since the last run or named by an open violation (any other
# key's shipment appears as a new row, and its violation stays in scope while open).
_CARRIER_OF_SUBJECT_FULL = """
        SELECT subject.id AS order_id, subject.saga_id, subject.status, subject.state,
               c.id, c.idempotency_key, c.reference, c.accepted, c.cancelled
          FROM {carrier} c JOIN subject ON subject.saga_id::text = {saga_text_of_carrier_key}
         -- LIKE with a fixed prefix, which PostgreSQL estimates from the column's statistics: a
         -- test of characters by position is guessed at a row or two, and every shipment is
         -- then joined by a nested loop of index scans, several times slower than a hash join.
         WHERE {is_carrier_key_of_a_saga}
"""
_CARRIER_OF_SUBJECT_CHANGED = """
        SELECT subject.id AS order_id, subject.saga_id, subject.status, subject.state,
               c.id, c.idempotency_key, c.reference, c.accepted, c.cancelled
          FROM subject JOIN {carrier} c ON c.idempotency_key = {subject_shipment_key}
        UNION
        SELECT subject.id, subject.saga_id, subject.status, subject.state,
               c.id, c.idempotency_key, c.reference, c.accepted, c.cancelled
          FROM {carrier} c
          JOIN subject ON subject.saga_id = {saga_of_carrier_key}
         WHERE {carrier_in_scope}
"""

# A live shipment (accepted, not cancelled) belongs to a confirmed order, and only one; any
# shipment the carrier accepted is in our books, made by a step of its saga, under the step
# key the carrier's key was derived from, even when cancelled since: a tombstone counts.
_CARRIER_DISAGREES = """
    WITH subject AS (
        SELECT o.id, o.saga_id, o.status, s.state
          FROM {order} o JOIN {saga} s ON s.id = o.saga_id
         WHERE {in_scope} AND s.state IN {terminal}
    ),
    carrier AS ({carrier_of_subject}),
    twice AS (
        SELECT order_id FROM carrier WHERE accepted AND NOT cancelled GROUP BY order_id HAVING count(*) > 1
    ),
    facts AS (
        -- Joins, not NOT EXISTS: PostgreSQL hashes that subplan over every shipment even for
        -- the few carrier shipments of an incremental run; the step key is unique.
        SELECT carrier.*, carrier.accepted AND NOT carrier.cancelled AS live,
               twice.order_id IS NOT NULL AS twice, carrier.accepted AND sh.id IS NULL AS unrecorded
          FROM carrier
          LEFT JOIN twice ON twice.order_id = carrier.order_id
          LEFT JOIN {shipment} sh ON sh.saga_id = carrier.saga_id
                                 AND {carrier_key_of_shipment} = carrier.idempotency_key
    )
    SELECT * FROM facts
     WHERE (live AND (status = 'cancelled' OR state IN ('compensated', 'failed'))) OR unrecorded OR twice
     ORDER BY order_id, id
"""


def check_carrier_book(scope: Scope) -> list[Finding]:
    carrier_of_subject = (_CARRIER_OF_SUBJECT_FULL if scope.full else _CARRIER_OF_SUBJECT_CHANGED).format(
        **TABLES, **KEYS, carrier_in_scope=scope.carrier_shipments("c.id")
    )
    rows = _query(
        _CARRIER_DISAGREES,
        scope,
        in_scope=scope.orders("o.id"),
        terminal=TERMINAL,
        carrier_of_subject=carrier_of_subject,
    )
    findings = []
    live_by_order: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        if row["live"]:
            live_by_order.setdefault(row["order_id"], []).append(row)
        if row["unrecorded"]:
            findings.append(
                Finding(
                    kind=Kind.CARRIER_SHIPMENT_UNRECORDED,
                    key=f"carrier_shipment:{row['id']}",
                    involved={"carrier_shipment": row["id"], "order": row["order_id"], "saga": str(row["saga_id"])},
                    detail=(
                        f"the carrier accepted shipment {row['reference']} under key {row['idempotency_key']!r} "
                        f"({'cancelled' if row['cancelled'] else 'live'}) for order {row['order_id']}, "
                        f"whose saga is {row['state']}; we have no shipment under that step key"
                    ),
                )
            )
    for live in live_by_order.values():
        first = live[0]
        references = ", ".join(row["reference"] for row in live)
        involved = {"carrier_shipments": [row["id"] for row in live]}
        if first["status"] == "cancelled" or first["state"] in ("compensated", "failed"):
            findings.append(
                _order_finding(
                    Kind.CARRIER_SHIPMENT_LIVE_CANCELLED,
                    first,
                    f"{len(live)} live shipment(s) at the carrier ({references}) for an order that is "
                    f"{first['status']}, its saga {first['state']}",
                    **involved,
                )
            )
        if first["twice"]:
            findings.append(
                _order_finding(
                    Kind.CARRIER_SHIPMENT_TWICE,
                    first,
                    f"{len(live)} live shipments at the carrier ({references}) for one order",
                    **involved,
                )
            )
    return findings


# Refunds are joined to their charge by the charge's transaction id, never by key: a refund
# made in the gateway's console, or by a late undo under a derived key, refunds the same
# money. These hold at every moment, in flight or not: a refund moves money at once.
_CHARGES_FULL = "SELECT c.* FROM {gateway} c WHERE c.kind = 'charge'"
# The charges of the refunds new since the last run (by the unique transaction id), and the
# charges new or named by an open violation.
_CHARGES_CHANGED = """
        SELECT c.* FROM {gateway} c
         WHERE c.kind = 'charge' AND c.transaction_id IN (
               SELECT g.charge_transaction_id FROM {gateway} g WHERE g.kind = 'refund' AND {in_scope})
        UNION
        SELECT c.* FROM {gateway} c WHERE c.kind = 'charge' AND {in_scope_c}
"""

_REFUNDS_BEYOND_CHARGE = """
    WITH charges AS ({charges}),
    refunded AS (
        SELECT c.id, c.transaction_id, c.idempotency_key, c.currency,
               -- a declined charge took nothing: any refund of it gives money away
               CASE WHEN c.succeeded THEN c.amount ELSE 0 END AS amount,
               count(r.id) AS refunds, sum(r.amount) AS refunded,
               array_agg(r.id ORDER BY r.id) AS refund_ids,
               array_agg(r.transaction_id ORDER BY r.id) AS refund_references
          FROM charges c JOIN {gateway} r ON r.charge_transaction_id = c.transaction_id
         WHERE r.kind = 'refund' AND r.succeeded
         GROUP BY c.id, c.transaction_id, c.idempotency_key, c.currency, c.succeeded, c.amount
    )
    SELECT refunded.*, o.id AS order_id
      FROM refunded
      LEFT JOIN {order} o ON o.saga_id = {saga_of_refunded_charge}
     WHERE refunded.refunds > 1 OR refunded.refunded > refunded.amount
"""


def check_gateway_refunds(scope: Scope) -> list[Finding]:
    charges = (_CHARGES_FULL if scope.full else _CHARGES_CHANGED).format(
        **TABLES, in_scope=scope.gateway_charges("g.id"), in_scope_c=scope.gateway_charges("c.id")
    )
    findings = []
    for row in _query(_REFUNDS_BEYOND_CHARGE, scope, charges=charges):
        involved = {
            "gateway_charge": row["id"],
            "transaction_id": row["transaction_id"],
            "refunds": row["refund_ids"],
            **({"order": row["order_id"]} if row["order_id"] is not None else {}),
        }
        of_charge = (
            f"charge {row['transaction_id']} of {row['amount']} {row['currency']}"
            + (f" (order {row['order_id']})" if row["order_id"] is not None else "")
            + f": {row['refunds']} refund(s) at the gateway ({', '.join(row['refund_references'])})"
        )
        if row["refunded"] > row["amount"]:
            findings.append(
                Finding(
                    kind=Kind.GATEWAY_REFUNDS_EXCEED_CHARGE,
                    key=f"gateway_charge:{row['id']}",
                    involved=involved,
                    detail=f"{of_charge} give back {row['refunded']}, more than was charged",
                )
            )
        if row["refunds"] > 1:
            findings.append(
                Finding(
                    kind=Kind.GATEWAY_CHARGE_REFUNDED_TWICE,
                    key=f"gateway_charge:{row['id']}",
                    involved=involved,
                    detail=f"{of_charge}: refunded more than once",
                )
            )
    return findings


# A cancellation notice that tells the customer their money was refunded needs a refund at
# the gateway: a succeeded refund of a charge made for the order, under its saga's charge key
# or the charge its payment names (a charge made by hand, recorded with its evidence). The
# saga's own refund, under its compensation key, is found by that unique key; only a notice
# it does not back looks for another refund of the order's charges, by transaction id, which
# has no index: with no such notice the gateway's table is not read at all.
_REFUND_ANNOUNCED_NOT_MADE = """
    WITH claims AS (
        SELECT o.id AS order_id, o.saga_id, n.id AS notification_id
          FROM {order} o
          JOIN {saga} s ON s.id = o.saga_id
          JOIN {notification} n ON n.order_id = o.id
         WHERE {in_scope} AND s.state IN {terminal}
           AND n.kind = 'cancellation' AND n.body ILIKE '%%refunded%%'
    ),
    charges AS (
        SELECT claims.order_id, c.transaction_id
          FROM claims JOIN {gateway} c ON c.idempotency_key = {claims_charge_key}
         WHERE c.kind = 'charge'
        UNION
        SELECT claims.order_id, p.provider_charge_id
          FROM claims JOIN {payment} p ON p.order_id = claims.order_id
         WHERE p.provider_charge_id <> ''
    ),
    backed AS (
        -- A refund of one of its charges, under whichever key (the saga's, an operator's).
        SELECT DISTINCT claims.order_id
          FROM claims
          JOIN charges ON charges.order_id = claims.order_id
          JOIN {gateway} r ON r.charge_transaction_id = charges.transaction_id
         WHERE r.kind = 'refund' AND r.succeeded
    ),
    unbacked AS (
        SELECT claims.* FROM claims LEFT JOIN backed ON backed.order_id = claims.order_id
         WHERE backed.order_id IS NULL
    ),
    refunded AS (
        SELECT DISTINCT charges.order_id
          FROM unbacked
          JOIN charges ON charges.order_id = unbacked.order_id
          JOIN {gateway} r ON r.charge_transaction_id = charges.transaction_id
         WHERE r.kind = 'refund' AND r.succeeded
    )
    SELECT unbacked.* FROM unbacked LEFT JOIN refunded ON refunded.order_id = unbacked.order_id
     WHERE refunded.order_id IS NULL
"""


def check_refund_notices(scope: Scope) -> list[Finding]:
    return [
        _order_finding(
            Kind.CANCELLATION_REFUND_UNMADE,
            row,
            "the cancellation notice says the money was refunded; the gateway holds no refund of any charge "
            "made for this order",
            notification=row["notification_id"],
        )
        for row in _query(_REFUND_ANNOUNCED_NOT_MADE, scope, in_scope=scope.orders("o.id"), terminal=TERMINAL)
    ]


# ---------------------------------------------------------------------------
# 8. A step done by hand is in its participant's books: the saga's step log says "done by
#    hand" only where the participant recorded the operator's outcome under the step's key.
# ---------------------------------------------------------------------------

_MANUAL_STEP_UNRECORDED = """
    WITH manual AS (
        SELECT st.id, st.saga_id, st.step, st.phase, st.attempt, st.idempotency_key, o.id AS order_id
          FROM {sagastep} st JOIN {order} o ON o.saga_id = st.saga_id
         WHERE st.outcome = 'manual' AND {in_scope}
    ),
    recorded AS (
        SELECT step_key FROM {payments_outcome} WHERE outcome = 'manual'
        UNION ALL SELECT step_key FROM {inventory_outcome} WHERE outcome = 'manual'
        UNION ALL SELECT step_key FROM {shipping_outcome} WHERE outcome = 'manual'
        UNION ALL SELECT step_key FROM {orders_outcome} WHERE outcome = 'manual'
    )
    SELECT manual.* FROM manual
     WHERE NOT EXISTS (SELECT 1 FROM recorded WHERE recorded.step_key = manual.idempotency_key)
"""


def check_manual_steps(scope: Scope) -> list[Finding]:
    return [
        Finding(
            kind=Kind.MANUAL_STEP_UNRECORDED,
            key=f"sagastep:{row['id']}",
            involved={"order": row["order_id"], "saga": str(row["saga_id"]), "sagastep": row["id"]},
            detail=(
                f"{row['step']} ({row['phase']}) attempt {row['attempt']} is done by hand in the saga's log, but no "
                f"participant recorded it under {row['idempotency_key']!r}: a late copy would not see it"
            ),
        )
        for row in _query(_MANUAL_STEP_UNRECORDED, scope, in_scope=scope.orders("o.id"))
    ]


Check = Callable[[Scope], list[Finding]]

CHECKS: list[Check] = [
    check_order_saga_links,
    check_confirmed_orders,
    check_cancelled_orders,
    check_money_and_shipments,
    check_stock,
    check_liveness,
    check_carrier_book,
    check_gateway_refunds,
    check_refund_notices,
    check_manual_steps,
]
