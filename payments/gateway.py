"""The payment gateway interface, and a fake that behaves like Stripe.

Every call carries an idempotency key derived from the saga step; the same key returns the
same result and never moves money twice. Calls happen outside database transactions.
"""

import uuid
from dataclasses import dataclass
from typing import Protocol

from django.db import connection, transaction

from common.faults import fault_fires, injected_latency
from common.rows import mark_inserted
from payments.models import GatewayCharge


@dataclass(frozen=True)
class GatewayResponse:
    is_success: bool
    kind: str
    amount: int
    currency: str
    transaction_id: str
    error: str = ""


class GatewayTimeout(RuntimeError):
    """No answer in time: the charge may or may not have happened. Retry with the same key."""


class GatewayUnavailable(RuntimeError):
    """A 5xx or a refused connection: nothing happened. Retry with the same key."""


class ChargeAlreadyRefunded(Exception):
    """The charge was refunded already, under another key (Stripe's charge_already_refunded):
    nothing moved now. ``refund`` is the refund that was made."""

    def __init__(self, refund: GatewayResponse) -> None:
        super().__init__(f"charge already refunded by {refund.transaction_id}")
        self.refund = refund


class PaymentGateway(Protocol):
    def charge(self, *, idempotency_key: str, amount: int, currency: str, token: str) -> GatewayResponse: ...

    def refund(
        self, *, idempotency_key: str, charge_transaction_id: str, amount: int, currency: str
    ) -> GatewayResponse: ...

    def retrieve_charge(self, *, idempotency_key: str) -> GatewayResponse | None: ...

    def retrieve_charge_by_id(self, *, transaction_id: str) -> GatewayResponse | None: ...


DECLINED_TOKENS = {"tok_chargeDeclined": "card declined", "tok_insufficientFunds": "insufficient funds"}
SUCCESS_TOKENS = {"tok_visa", "tok_mastercard"}


class FakeGateway:
    """Test tokens: tok_visa succeeds, tok_chargeDeclined is declined (a business failure).
    Faults (latency, transient errors, timeouts after charging) come from common.faults."""

    def charge(self, *, idempotency_key: str, amount: int, currency: str, token: str) -> GatewayResponse:
        _answer_or_fail("gateway_transient")
        if token in SUCCESS_TOKENS:
            succeeded, error = True, ""
        else:
            succeeded, error = False, DECLINED_TOKENS.get(token, "invalid card token")
        record = self._record(
            idempotency_key=idempotency_key,
            kind=GatewayCharge.Kind.CHARGE,
            amount=amount,
            currency=currency,
            token=token,
            succeeded=succeeded,
            error=error,
        )
        if fault_fires("gateway_timeout_after_charge"):
            raise GatewayTimeout("gateway timed out after accepting the charge")
        return _response(record)

    def refund(
        self, *, idempotency_key: str, charge_transaction_id: str, amount: int, currency: str
    ) -> GatewayResponse:
        _answer_or_fail("gateway_transient", "gateway_refund_transient")
        # The charge's row is locked while its refunds are looked at: a charge is refunded
        # once, whoever asks and under whichever key, as a real provider refuses to refund
        # more than it charged.
        with transaction.atomic():
            charge = (
                GatewayCharge.objects.select_for_update()
                .filter(transaction_id=charge_transaction_id, kind="charge")
                .first()
            )
            if charge is None or not charge.succeeded:
                raise ValueError(f"no successful charge {charge_transaction_id} to refund")
            earlier = (
                GatewayCharge.objects.filter(
                    kind=GatewayCharge.Kind.REFUND, charge_transaction_id=charge_transaction_id, succeeded=True
                )
                .exclude(idempotency_key=idempotency_key)
                .first()
            )
            if earlier is not None:
                raise ChargeAlreadyRefunded(_response(earlier))
            record = self._record(
                idempotency_key=idempotency_key,
                kind=GatewayCharge.Kind.REFUND,
                amount=amount,
                currency=currency,
                succeeded=True,
                charge_transaction_id=charge_transaction_id,
            )
        return _response(record)

    def retrieve_charge(self, *, idempotency_key: str) -> GatewayResponse | None:
        record = GatewayCharge.objects.filter(idempotency_key=idempotency_key, kind="charge").first()
        return _response(record) if record else None

    def retrieve_charge_by_id(self, *, transaction_id: str) -> GatewayResponse | None:
        record = GatewayCharge.objects.filter(transaction_id=transaction_id, kind="charge").first()
        return _response(record) if record else None

    def _record(self, *, idempotency_key: str, **fields: object) -> GatewayCharge:
        """The book's entry under this key: written now, or the one an earlier call wrote. One
        statement, so that a concurrent call with the same key finds the same entry."""
        prefix = "ch" if fields["kind"] == "charge" else "re"
        record = GatewayCharge(
            idempotency_key=idempotency_key, transaction_id=f"{prefix}_{uuid.uuid4().hex[:24]}", **fields
        )
        with connection.cursor() as cursor:
            cursor.execute(
                _RECORD_SQL,
                [
                    record.idempotency_key,
                    record.kind,
                    record.transaction_id,
                    record.charge_transaction_id,
                    record.amount,
                    record.currency,
                    record.token,
                    record.succeeded,
                    record.error,
                ],
            )
            row = cursor.fetchone()
        if row is None:
            return GatewayCharge.objects.get(idempotency_key=idempotency_key)
        mark_inserted(record, ("id", "created_at"), row)
        return record


_RECORD_SQL = """
    INSERT INTO payments_gatewaycharge (idempotency_key, kind, transaction_id, charge_transaction_id, amount,
                                        currency, token, succeeded, error)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id, created_at
"""


def _answer_or_fail(*faults: str) -> None:
    """What every call goes through before it reaches the book: the injected latency, then a
    503 when one of ``faults`` fires (checked in order, the first that fires is enough)."""
    injected_latency()
    if any(fault_fires(fault) for fault in faults):
        raise GatewayUnavailable("gateway answered 503")


def _response(record: GatewayCharge) -> GatewayResponse:
    return GatewayResponse(
        is_success=record.succeeded,
        kind=record.kind,
        amount=record.amount,
        currency=record.currency,
        transaction_id=record.transaction_id,
        error=record.error,
    )


def get_gateway() -> PaymentGateway:
    return FakeGateway()
