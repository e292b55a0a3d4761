"""The messages of the payments context: its commands, and the data of its replies.

The order saga builds the commands from these classes and the handlers parse them with the
same classes, so a field renamed on one side cannot be missed on the other.
"""

from dataclasses import dataclass
from typing import ClassVar

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
