"""The order saga, declared in one place.

create_order happens in the API's transaction; its compensation cancels the order and tells
the customer. Charging, reserving and shipping can be undone; the confirmation email is the
point of no return and is retried until it is sent, never compensated. Each step is named
after its command; the commands and replies are the contexts' contracts.
"""

from dataclasses import dataclass, field
from typing import Any

from inventory.contracts import ReleaseStock, Reserved, ReserveStock
from orders.contracts import CancelOrder, ConfirmOrder
from outbox.messages import parse_payload
from payments.contracts import Charged, ChargePayment, Refunded, RefundPayment
from sagas.definition import Command, Compensating, SagaDefinition, Step, StepKind, register_definition
from shipping.contracts import CancelShipment, CreateShipment, ShipmentCreated


@dataclass
class OrderSagaData:
    order_id: int
    amount: int
    currency: str
    payment_token: str
    lines: list[dict[str, Any]]
    shipping_address: dict[str, Any]
    saga_id: str = ""
    payment_id: int | None = None
    reservation_id: int | None = None
    shipment_id: int | None = None
    tracking_number: str = ""
    refunded_amount: int = 0  # what the refund gave back, for the cancellation notice
    extra: dict[str, Any] = field(default_factory=dict)


Data = OrderSagaData
Reply = dict[str, Any]  # a reply's data, parsed with the context's reply contract


def charge_payment(data: Data) -> Command:
    return Command.of(
        ChargePayment(order_id=data.order_id, amount=data.amount, currency=data.currency, token=data.payment_token)
    )


def refund_payment(data: Data, undo: Compensating) -> Command:
    return Command.of(RefundPayment(order_id=data.order_id, charge_key=undo.forward_key))


def reserve_stock(data: Data) -> Command:
    return Command.of(ReserveStock(order_id=data.order_id, lines=data.lines))


def release_stock(data: Data, undo: Compensating) -> Command:
    return Command.of(ReleaseStock(order_id=data.order_id, reservation_key=undo.forward_key))


def create_shipment(data: Data) -> Command:
    return Command.of(CreateShipment(order_id=data.order_id, address=data.shipping_address))


def cancel_shipment(data: Data, undo: Compensating) -> Command:
    return Command.of(CancelShipment(order_id=data.order_id, shipment_key=undo.forward_key))


def confirm_order(data: Data) -> Command:
    return Command.of(ConfirmOrder(order_id=data.order_id))


def cancel_order(data: Data, undo: Compensating) -> Command:
    # Whether the customer was ever charged or had stock held: only then is a notice owed.
    charged = data.payment_id is not None or data.reservation_id is not None or data.refunded_amount > 0
    return Command.of(
        CancelOrder(
            order_id=data.order_id, reason=undo.failure_reason, refunded_amount=data.refunded_amount, charged=charged
        )
    )


def charged(data: Data, reply: Reply) -> Reply:
    return {"payment_id": parse_payload(Charged, reply).payment_id}


def refunded(data: Data, reply: Reply) -> Reply:
    return {"refunded_amount": parse_payload(Refunded, reply).refunded_amount}


def reserved(data: Data, reply: Reply) -> Reply:
    return {"reservation_id": parse_payload(Reserved, reply).reservation_id}


def shipped(data: Data, reply: Reply) -> Reply:
    shipment = parse_payload(ShipmentCreated, reply)
    return {"shipment_id": shipment.shipment_id, "tracking_number": shipment.tracking_number}


ORDER_SAGA = register_definition(
    SagaDefinition(
        name="order_fulfilment",
        version=1,
        data_class=OrderSagaData,
        steps=[
            Step("create_order", compensation=cancel_order),
            Step("charge_payment", charge_payment, refund_payment, on_reply=charged, on_compensated=refunded),
            Step("reserve_stock", reserve_stock, release_stock, on_reply=reserved),
            Step("create_shipment", create_shipment, cancel_shipment, on_reply=shipped),
            Step("confirm_order", confirm_order, kind=StepKind.RETRIABLE),
        ],
    )
)
