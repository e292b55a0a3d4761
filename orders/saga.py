"""The order saga, declared in one place.

create_order happens in the API's transaction; its compensation cancels the order and tells
the customer. Charging, reserving and shipping can be undone; the confirmation email is the
point of no return and is retried until it is sent, never compensated.
"""

from dataclasses import dataclass, field
from typing import Any

from sagas.definition import Command, SagaDefinition, Step, StepKind, register_definition


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
    failure_reason: str = ""  # filled by the saga engine when compensation begins
    extra: dict[str, Any] = field(default_factory=dict)


def _key(data: OrderSagaData, step: str) -> str:
    return f"{data.saga_id}:{step}"


def charge_payment(data: OrderSagaData) -> Command:
    payload = {"order_id": data.order_id, "amount": data.amount, "currency": data.currency, "token": data.payment_token}
    return Command("payments", "charge_payment", payload)


def refund_payment(data: OrderSagaData) -> Command:
    return Command(
        "payments", "refund_payment", {"order_id": data.order_id, "charge_key": _key(data, "charge_payment")}
    )


def reserve_stock(data: OrderSagaData) -> Command:
    return Command("inventory", "reserve_stock", {"order_id": data.order_id, "lines": data.lines})


def release_stock(data: OrderSagaData) -> Command:
    payload = {"order_id": data.order_id, "reservation_key": _key(data, "reserve_inventory")}
    return Command("inventory", "release_stock", payload)


def create_shipment(data: OrderSagaData) -> Command:
    return Command("shipping", "create_shipment", {"order_id": data.order_id, "address": data.shipping_address})


def cancel_shipment(data: OrderSagaData) -> Command:
    payload = {"order_id": data.order_id, "shipment_key": _key(data, "create_shipment")}
    return Command("shipping", "cancel_shipment", payload)


def send_confirmation(data: OrderSagaData) -> Command:
    return Command("orders", "confirm_order", {"order_id": data.order_id})


def cancel_order(data: OrderSagaData) -> Command:
    payload = {"order_id": data.order_id, "reason": data.failure_reason, "refunded_amount": data.refunded_amount}
    # Whether the customer was ever charged or had stock held: only then is a notice owed.
    payload["charged"] = data.payment_id is not None or data.reservation_id is not None or data.refunded_amount > 0
    return Command("orders", "cancel_order", payload)


ORDER_SAGA = register_definition(
    SagaDefinition(
        name="order_fulfilment",
        version=1,
        data_class=OrderSagaData,
        steps=[
            Step("create_order", compensation=cancel_order),
            Step("charge_payment", action=charge_payment, compensation=refund_payment),
            Step("reserve_inventory", action=reserve_stock, compensation=release_stock),
            Step("create_shipment", action=create_shipment, compensation=cancel_shipment),
            Step("send_confirmation", action=send_confirmation, kind=StepKind.RETRIABLE),
        ],
    )
)
