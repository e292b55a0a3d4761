"""Inventory's saga commands: reserve stock, and its compensation, release stock."""

from typing import Any

from inventory.contracts import Released, ReleaseStock, Reserved, ReserveStock
from inventory.exceptions import ReservationRefused
from inventory.models import StepOutcome
from inventory.services import LineRequest, stock_release, stock_reserve, stock_reserve_by_hand
from outbox.exceptions import PoisonMessage
from outbox.messages import Message
from sagas.messages import command_meta
from sagas.outcomes import OutcomeBook
from sagas.participant import saga_participant

BOOK = OutcomeBook(StepOutcome)


def _lines(raw: list[dict[str, Any]]) -> list[LineRequest]:
    try:
        lines = [LineRequest(sku=str(line["sku"]), quantity=int(line["quantity"])) for line in raw]
    except (KeyError, TypeError, ValueError) as exc:
        raise PoisonMessage(f"malformed order lines: {exc}") from None
    if not lines or any(line.quantity <= 0 for line in lines):
        raise PoisonMessage("order lines must be non-empty with positive quantities")
    return lines


def reserve(message: Message, _: object) -> Reserved:
    command = message.parse(ReserveStock)
    meta = command_meta(message)
    reservation = stock_reserve(
        order_id=command.order_id,
        idempotency_key=meta.idempotency_key,
        lines=_lines(command.lines),
        saga_id=meta.saga_id,
        step=meta.step,
    )
    return Reserved(reservation_id=reservation.pk)


def reserve_by_hand(message: Message, evidence: str) -> Reserved:
    command = message.parse(ReserveStock)
    meta = command_meta(message)
    reservation = stock_reserve_by_hand(
        order_id=command.order_id,
        idempotency_key=meta.idempotency_key,
        evidence=evidence,
        saga_id=meta.saga_id,
        step=meta.step,
    )
    return Reserved(reservation_id=reservation.pk)


def release(message: Message, _: object) -> Released:
    command = message.parse(ReleaseStock)
    meta = command_meta(message)
    reservation = stock_release(
        order_id=command.order_id,
        reservation_key=command.reservation_key,
        idempotency_key=meta.idempotency_key,
        saga_id=meta.saga_id,
        step=meta.step,
    )
    return Released(released_reservation_id=reservation.pk)


def release_by_hand(message: Message, evidence: str) -> Released:
    """The operator put the goods back by hand: the reservation is released in our books, and
    its units become available again, as a release would make them."""
    return release(message, None)


REFUSALS = (ReservationRefused,)
saga_participant(ReserveStock.channel, handle=reserve, book=BOOK, manual=reserve_by_hand, business_failures=REFUSALS)
saga_participant(ReleaseStock.channel, handle=release, book=BOOK, manual=release_by_hand, business_failures=REFUSALS)
