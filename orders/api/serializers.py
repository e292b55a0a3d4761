"""Building blocks of the storefront API's serializers: strict input fields, the parts of a
request, and the representations of products and orders. Each view declares its own
InputSerializer / OutputSerializer from these.

Input is strict about types: a quantity is a JSON integer, not "2" nor 2.0 nor true, and a
string is a string. A client with a serialisation bug hears about it instead of having its
data coerced into something it did not mean.
"""

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.utils.serializer_helpers import BindingDict

from inventory.models import Product, Reservation
from orders.api.errors import error_code_help
from orders.api.rendering import compiled
from orders.countries import ISO_3166_ALPHA2
from orders.models import Order
from orders.selectors import NOTHING_YET, OrderDetail
from orders.services import MAX_LINES, MAX_QUANTITY
from payments.models import Payment
from sagas.models import Outcome, Phase, SagaState
from shipping.models import Shipment

# With their labels: the schema names those that say more than their value ("superseded":
# superseded by a later attempt).
PAYMENT_STATUSES = [(NOTHING_YET, NOTHING_YET), *Payment.Status.choices]
INVENTORY_STATUSES = [(NOTHING_YET, NOTHING_YET), *Reservation.Status.choices]
SHIPMENT_STATUSES = [(NOTHING_YET, NOTHING_YET), *Shipment.Status.choices]
SAGA_STATES = SagaState.choices
SAGA_PHASES = Phase.choices
SAGA_STEP_OUTCOMES = Outcome.choices
# An order's id is a PostgreSQL bigint: documented as int64, so that generators of typed
# clients pick a 64-bit integer.
ORDER_ID_MAX = 2**63 - 1


class StrictStringMixin:
    """Accept only JSON strings, and only text PostgreSQL can store (no lone surrogates;
    CharField already refuses NUL characters)."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        try:
            data.encode("utf-8")
        except UnicodeEncodeError:
            self.fail("invalid_characters")
        return super().to_internal_value(data)


class StrictCharField(StrictStringMixin, serializers.CharField):
    default_error_messages = {"invalid_characters": "Contains characters that are not valid Unicode text."}


class StrictEmailField(StrictStringMixin, serializers.EmailField):
    default_error_messages = {"invalid_characters": "Contains characters that are not valid Unicode text."}


class StrictIntegerField(serializers.IntegerField):
    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return data


class FieldsBuiltOnceSerializer(serializers.Serializer):
    """An input serializer whose fields are built once per class, then shared by its instances.

    DRF deep-copies a serializer's declared fields, nested serializers included, for every
    instance: for an order's body that was most of the cost of validating it. Validation keeps
    nothing on the fields (the errors and the validated data live on the instance), so one tree,
    bound to an instance made for it, can serve every request. Only for serializers whose
    fields use neither the context nor ``partial``: those are the bound instance's, not the
    request's.
    """

    @property
    def fields(self) -> BindingDict:
        cls = type(self)
        if "_fields_built_once" not in cls.__dict__:
            cls._fields_built_once = serializers.Serializer.fields.func(cls())
        return cls._fields_built_once


# ---------------------------------------------------------------------------
# Parts of a request
# ---------------------------------------------------------------------------


class CustomerInputSerializer(serializers.Serializer):
    email = StrictEmailField(max_length=254)
    name = StrictCharField(max_length=200)

    class Meta:
        ref_name = "Customer"


class LineInputSerializer(serializers.Serializer):
    sku = StrictCharField(max_length=64)
    quantity = StrictIntegerField(min_value=1, max_value=MAX_QUANTITY)

    class Meta:
        ref_name = "OrderLineInput"


class PaymentInputSerializer(serializers.Serializer):
    token = StrictCharField(max_length=100, help_text="the payment provider's card token, e.g. tok_visa")

    class Meta:
        ref_name = "PaymentInput"


class AddressSerializer(serializers.Serializer):
    line1 = StrictCharField(max_length=200)
    line2 = StrictCharField(max_length=200, required=False, allow_blank=True)
    city = StrictCharField(max_length=100)
    postal_code = StrictCharField(max_length=20)
    country = serializers.ChoiceField(choices=ISO_3166_ALPHA2, help_text="ISO 3166-1 alpha-2 code, upper case")

    class Meta:
        ref_name = "ShippingAddress"


def order_lines_field() -> serializers.ListField:
    # A ListField rather than many=True: its limits show in the schema as minItems/maxItems.
    return serializers.ListField(child=LineInputSerializer(), allow_empty=False, min_length=1, max_length=MAX_LINES)


# ---------------------------------------------------------------------------
# Representations
# ---------------------------------------------------------------------------


class MoneySerializer(serializers.Serializer):
    amount = serializers.IntegerField(help_text="in minor units (cents)")
    currency = serializers.CharField(help_text="ISO 4217 code")

    class Meta:
        ref_name = "Money"


class ProductSerializer(serializers.Serializer):
    sku = serializers.CharField()
    name = serializers.CharField()
    price = serializers.SerializerMethodField()
    available_quantity = serializers.SerializerMethodField()

    class Meta:
        ref_name = "Product"

    @extend_schema_field(MoneySerializer)
    def get_price(self, product: Product) -> dict[str, Any]:
        return {"amount": product.price_amount, "currency": product.currency}

    def get_available_quantity(self, product: Product) -> int:
        return max(getattr(product, "available", None) or 0, 0)


class OrderLineSerializer(serializers.Serializer):
    sku = serializers.CharField()
    name = serializers.CharField()
    quantity = serializers.IntegerField()
    unit_price = MoneySerializer(help_text="the catalog price when the order was placed")
    total = MoneySerializer()

    class Meta:
        ref_name = "OrderLine"


class PaymentSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=PAYMENT_STATUSES, help_text='"none" until the card is charged')
    amount_charged = MoneySerializer()
    amount_refunded = MoneySerializer()

    class Meta:
        ref_name = "OrderPayment"


class ReservedLineSerializer(serializers.Serializer):
    sku = serializers.CharField()
    quantity = serializers.IntegerField()

    class Meta:
        ref_name = "ReservedLine"


class InventorySerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=INVENTORY_STATUSES, help_text='"none" until stock is reserved')
    lines = ReservedLineSerializer(many=True)

    class Meta:
        ref_name = "OrderInventory"


class ShipmentSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=SHIPMENT_STATUSES, help_text='"none" until a shipment is created')
    tracking_number = serializers.CharField()

    class Meta:
        ref_name = "OrderShipment"


class SagaStepSerializer(serializers.Serializer):
    step = serializers.CharField()
    phase = serializers.ChoiceField(choices=SAGA_PHASES, help_text="forward, or compensation (undoing the step)")
    attempt = serializers.IntegerField()
    outcome = serializers.ChoiceField(choices=SAGA_STEP_OUTCOMES)
    error = serializers.CharField()
    sent_at = serializers.DateTimeField()
    replied_at = serializers.DateTimeField(allow_null=True)

    class Meta:
        ref_name = "SagaStepAttempt"


class SagaSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    state = serializers.ChoiceField(choices=SAGA_STATES)
    current_step = serializers.CharField(help_text="empty once the saga is finished")
    stuck = serializers.BooleanField(help_text="retries ran out; an operator is looking into it")
    failure_reason = serializers.CharField()
    timeline = SagaStepSerializer(many=True, help_text="every attempt of every step, oldest first")

    class Meta:
        ref_name = "OrderSaga"


class OrderDetailSerializer(serializers.Serializer):
    id = serializers.IntegerField(min_value=1, max_value=ORDER_ID_MAX)
    status = serializers.ChoiceField(choices=Order.Status.choices)
    cancel_requested = serializers.BooleanField(
        help_text="a cancellation was requested (by the customer, or an operator): the order becomes `cancelled` "
        "once what was done is undone. An order whose saga fails is cancelled without one."
    )
    cancel_reason = serializers.CharField()
    customer = CustomerInputSerializer()
    shipping_address = AddressSerializer()
    lines = OrderLineSerializer(many=True)
    total = MoneySerializer()
    payment = PaymentSerializer()
    inventory = InventorySerializer()
    shipment = ShipmentSerializer()
    saga = SagaSerializer(allow_null=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    class Meta:
        ref_name = "Order"


# Compiled once from the serializer's own fields (orders/api/rendering.py): the serializer is
# the one description of the shape, and this renders it in a quarter of DRF's time.
_RENDER_ORDER = compiled(OrderDetailSerializer())


def order_representation(order: OrderDetail) -> dict[str, Any]:
    """An order as the API shows it: what OrderDetailSerializer(order).data gives."""
    return _RENDER_ORDER(order)


class OrderSummarySerializer(serializers.Serializer):
    """The list's compact order: the order's own columns only (one query per page)."""

    id = serializers.IntegerField(min_value=1, max_value=ORDER_ID_MAX)
    status = serializers.ChoiceField(choices=Order.Status.choices)
    cancel_reason = serializers.CharField()
    total = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    class Meta:
        ref_name = "OrderSummary"

    @extend_schema_field(MoneySerializer)
    def get_total(self, order: Order) -> dict[str, Any]:
        return {"amount": order.total_amount, "currency": order.currency}


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(help_text=error_code_help())
    message = serializers.CharField(help_text="for people")
    fields = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        help_text='problems by input path, e.g. {"lines.0.quantity": ["..."]}; empty when not about one field',
    )

    class Meta:
        ref_name = "ErrorDetail"


class ErrorSerializer(serializers.Serializer):
    """The one shape of every error answer; documents what orders.api.errors builds."""

    error = ErrorDetailSerializer()

    class Meta:
        ref_name = "Error"


def paginated(serializer: type[serializers.Serializer], name: str) -> type[serializers.Serializer]:
    """The documented shape of a cursor-paginated list of ``serializer``."""
    return type(
        name,
        (serializers.Serializer,),
        {
            "next": serializers.URLField(allow_null=True, help_text="the next page, null on the last"),
            "previous": serializers.URLField(allow_null=True),
            "results": serializer(many=True),
            "Meta": type("Meta", (), {"ref_name": name}),
        },
    )
