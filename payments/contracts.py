"""The messages of the payments context: its commands, and the data of its replies.

The order saga builds the commands from these classes and the handlers parse them with the
same classes, so a field renamed on one side cannot be missed on the other.
"""

from dataclasses import dataclass
from typing import ClassVar

from outbox.events import integration_event
from outbox.messages import Channel
from sagas.messages import SAGA_REPLY

CONSUMER = "payments"


@dataclass(frozen=True)
class ChargePayment:
    channel: ClassVar[Channel] = Channel(CONSUMER, "charge_payment")
    order_id: int
    amount: int
    currency: str
    token: str


@dataclass(frozen=True)
class RefundPayment:
    """Undo a charge: ``charge_key`` is the charge step's key, under which it was booked."""

    channel: ClassVar[Channel] = Channel(CONSUMER, "refund_payment")
    order_id: int
    charge_key: str


@dataclass(frozen=True)
class RefundLateCharge:
    """Payments' own command: refund a charge that landed after its step was decided."""

    channel: ClassVar[Channel] = Channel(CONSUMER, "refund_late_charge")
    order_id: int
    charge_key: str
    transaction_id: str
    saga_id: str = ""  # the saga step that charged, for the row that books the stray charge
    step: str = ""


@dataclass(frozen=True)
class Charged:
    channel: ClassVar[Channel] = SAGA_REPLY
    payment_id: int


@dataclass(frozen=True)
class Refunded:
    channel: ClassVar[Channel] = SAGA_REPLY
    refunded_payment_status: str
    refunded_amount: int  # what the refund gave back, for the customer's cancellation notice


# Integration events: facts for consumers outside the system (outbox.events), keyed by the order.


@integration_event(
    "payment.captured",
    1,
    example={
        "order_id": 1042,
        "saga_id": "4f6c1f9e-2d4b-4c1e-9a57-0d3e5b1c7a21",
        "payment_id": 77,
        "amount": 1497,
        "currency": "EUR",
        "reference": "ch_3f9a0c2b",
        "occurred_at": "2026-12-01T09:30:00.123456+00:00",
    },
)
@dataclass(frozen=True)
class PaymentCapturedV1:
    """Money was taken from the customer: one charge booked in the payment ledger (``reference``
    is the provider's charge id). ``saga_id`` is empty for a charge booked outside a saga."""

    order_id: int
    saga_id: str
    payment_id: int
    amount: int
    currency: str
    reference: str
    occurred_at: str


@integration_event(
    "payment.refunded",
    1,
    example={
        "order_id": 1042,
        "saga_id": "4f6c1f9e-2d4b-4c1e-9a57-0d3e5b1c7a21",
        "payment_id": 77,
        "amount": 1497,
        "currency": "EUR",
        "reference": "re_81d2e7aa",
        "occurred_at": "2026-12-01T09:30:00.123456+00:00",
    },
)
@dataclass(frozen=True)
class PaymentRefundedV1:
    """Money was given back: one refund booked in the payment ledger, always of the whole charge
    of ``payment_id`` (``reference`` is the provider's refund id)."""

    order_id: int
    saga_id: str
    payment_id: int
    amount: int
    currency: str
    reference: str
    occurred_at: str
