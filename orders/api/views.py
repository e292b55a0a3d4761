"""The storefront REST API. Each view validates its input, calls one service or selector and
answers with its output serializer; errors become HTTP answers in orders.api.errors."""

from typing import Any

from django.http import HttpResponse
from django.urls import Resolver404, resolve, reverse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from common import tracing
from common.logging import bind_context
from inventory.selectors import product_list
from orders.api.pagination import OrderPagination, ProductPagination, paginated_response
from orders.api.schema import (
    IDEMPOTENCY_KEY_HEADER,
    IDEMPOTENCY_KEY_MAX_LENGTH,
    IDEMPOTENCY_KEY_PARAMETER,
    LOCATION,
    ORDER_ID,
    ORDER_STATUS_FILTER,
    PAGINATION_PARAMETERS,
    REPLAYED,
    operation_errors,
)
from orders.api.serializers import (
    ORDER_ID_MAX,
    AddressSerializer,
    CustomerInputSerializer,
    FieldsBuiltOnceSerializer,
    OrderDetailSerializer,
    OrderSummarySerializer,
    PaymentInputSerializer,
    ProductSerializer,
    order_lines_field,
    order_representation,
    paginated,
)
from orders.idempotency import IdempotentResult, StoredResponse, idempotent_response
from orders.models import Order
from orders.selectors import order_detail, order_get, order_list, read_snapshot
from orders.services import Customer, LineInput, order_place, order_request_cancel
from sagas.models import SagaInstance

JSON = "application/json"

BAD_CURSOR = "the `cursor` is not one that `next` or `previous` gave"
NO_SUCH_ORDER = "no such order for this client (another client's order is not found either)"


# ---------------------------------------------------------------------------
# Products
# ---------------------------------------------------------------------------


class ProductListApi(APIView):
    OutputSerializer = ProductSerializer
    errors = operation_errors(
        "validation_error",
        "not_found",
        validation_error="`page_size` is not an integer from 1 to 100; `fields` names it",
        not_found=BAD_CURSOR,
    )

    @extend_schema(
        operation_id="products_list",
        summary="The catalog, with prices and available quantities",
        tags=["products"],
        parameters=[*PAGINATION_PARAMETERS, errors.retry_after],
        responses={200: paginated(ProductSerializer, "PaginatedProductList"), **errors.responses},
    )
    def get(self, request: Request) -> Response:
        return paginated_response(
            pagination_class=ProductPagination,
            serializer_class=self.OutputSerializer,
            queryset=product_list(),
            request=request,
            view=self,
        )


# ---------------------------------------------------------------------------
# Orders
# ---------------------------------------------------------------------------


def idempotency_key_of(request: Request) -> str:
    """The request's Idempotency-Key header, validated like a field of the body."""
    raw = request.headers.get(IDEMPOTENCY_KEY_HEADER)
    if raw is None:
        raise ValidationError({IDEMPOTENCY_KEY_HEADER: ["This header is required."]})
    key = raw.strip()
    if not 0 < len(key) <= IDEMPOTENCY_KEY_MAX_LENGTH or any(not " " <= char <= "~" for char in key):
        raise ValidationError(
            {IDEMPOTENCY_KEY_HEADER: [f"Must be 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} printable ASCII characters."]}
        )
    return key


def order_id_of(raw: str) -> int:
    """The path's order id; anything that cannot be an order's id is simply not found."""
    if not raw.isascii() or not raw.isdigit() or not 0 < int(raw) <= ORDER_ID_MAX:
        raise NotFound("No such order.")
    return int(raw)


def order_for(request: Request, raw_id: str) -> Order:
    order = order_get(client=request.user, order_id=order_id_of(raw_id))
    if order is None:
        raise NotFound("No such order.")
    return order


def render_order(order: Order, *, placed_saga: SagaInstance | None = None) -> dict[str, Any]:
    return order_representation(order_detail(order=order, placed_saga=placed_saga))


def as_http_response(stored: StoredResponse) -> HttpResponse:
    response = HttpResponse(stored.body, status=stored.status, content_type=stored.headers.get("Content-Type", JSON))
    for name, value in stored.headers.items():
        if name != "Content-Type":
            response[name] = value
    if stored.replayed:
        response["Idempotent-Replayed"] = "true"
    return response


class OrderListCreateApi(APIView):
    class InputSerializer(FieldsBuiltOnceSerializer):
        customer = CustomerInputSerializer()
        lines = order_lines_field()
        payment = PaymentInputSerializer()
        shipping_address = AddressSerializer()

        class Meta:
            ref_name = "OrderCreate"

    class FilterSerializer(serializers.Serializer):
        status = serializers.ChoiceField(choices=Order.Status.values, required=False, help_text="only orders in it")

        class Meta:
            ref_name = "OrderFilter"

    OutputSerializer = OrderDetailSerializer
    ListOutputSerializer = OrderSummarySerializer
    list_errors = operation_errors(
        "validation_error",
        "not_found",
        validation_error="`status` is not an order status, or `page_size` not an integer from 1 to 100; "
        "`fields` names the parameter",
        not_found=BAD_CURSOR,
    )
    create_errors = operation_errors(
        "validation_error",
        "parse_error",
        "idempotency_key_in_use",
        "request_too_large",
        "unsupported_media_type",
        "idempotency_key_reused",
        validation_error="the `Idempotency-Key` header or the body is invalid (an unknown sku included); "
        "`fields` names each offending input, e.g. `lines.0.quantity`",
    )

    @extend_schema(
        operation_id="orders_list",
        summary="The client's orders, newest first",
        parameters=[ORDER_STATUS_FILTER, *PAGINATION_PARAMETERS, list_errors.retry_after],
        responses={200: paginated(OrderSummarySerializer, "PaginatedOrderList"), **list_errors.responses},
    )
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        return paginated_response(
            pagination_class=OrderPagination,
            serializer_class=self.ListOutputSerializer,
            queryset=order_list(client=request.user, **filters.validated_data),
            request=request,
            view=self,
        )

    @extend_schema(
        operation_id="orders_create",
        summary="Place an order (asynchronously: it starts pending)",
        description=(
            "Prices come from the catalog. The order starts `pending`; its saga charges the card, reserves "
            "stock and ships, then the order is `confirmed`, or `cancelled` with a `cancel_reason`. "
            "Poll `GET /api/v1/orders/{id}/` (the `Location` header)."
        ),
        parameters=[IDEMPOTENCY_KEY_PARAMETER, LOCATION, REPLAYED, create_errors.retry_after],
        request=InputSerializer,
        responses={
            202: OpenApiResponse(OrderDetailSerializer, description="Accepted: the order, as first created"),
            **create_errors.responses,
        },
    )
    def post(self, request: Request) -> HttpResponse:
        key = idempotency_key_of(request)
        payload = self.InputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        client = request.user

        def place() -> IdempotentResult:
            placement = order_place(
                customer=Customer(**data["customer"]),
                lines=[LineInput(**line) for line in data["lines"]],
                payment_token=data["payment"]["token"],
                shipping_address=dict(data["shipping_address"]),
                client=client,
                # The saga remembers the key that started it: the lineage of an order starts here.
                idempotency_key=f"api:{client.pk}:{key}",
            )
            order = placement.order
            # The rest of this request's log lines, and its span, name the order and its saga:
            # from the access log line to the saga's messages, and from an order id to its trace.
            bind_context(correlation_id=str(order.saga_id), order_id=order.pk)
            tracing.annotate_current_span(order_id=order.pk, saga_id=order.saga_id)
            body = JSONRenderer().render(render_order(order, placed_saga=placement.saga))
            location = reverse("storefront_api:order-detail", kwargs={"order_id": order.pk})
            headers = {"Content-Type": JSON, "Location": location}
            return IdempotentResult(StoredResponse(status.HTTP_202_ACCEPTED, body, headers), order)

        stored = idempotent_response(
            client=client, key=key, method=request.method, path=request.path, payload=request.data, produce=place
        )
        return as_http_response(stored)


class OrderDetailApi(APIView):
    OutputSerializer = OrderDetailSerializer
    errors = operation_errors("not_found", not_found=NO_SUCH_ORDER)

    @extend_schema(
        operation_id="orders_retrieve",
        summary="An order with its payment, stock, shipment and saga timeline",
        parameters=[ORDER_ID, errors.retry_after],
        responses={200: OpenApiResponse(OrderDetailSerializer, description="The order."), **errors.responses},
    )
    def get(self, request: Request, order_id: str) -> Response:
        with read_snapshot():
            body = render_order(order_for(request, order_id))
        return Response(body)


class OrderCancelApi(APIView):
    OutputSerializer = OrderDetailSerializer
    errors = operation_errors(
        "not_found",
        "order_not_cancellable",
        not_found=NO_SUCH_ORDER,
        order_not_cancellable="too late: the order is confirmed, or its saga is past the step where it can "
        "be undone (the shipment is created)",
    )

    @extend_schema(
        operation_id="orders_cancel",
        summary="Cancel an order (idempotent)",
        description=(
            "202 while the cancellation runs (what was charged is refunded, reserved stock released, "
            "the shipment cancelled), 200 once the order is cancelled, 409 when it is too late."
        ),
        parameters=[ORDER_ID, errors.retry_after],
        request=None,
        responses={
            200: OpenApiResponse(OrderDetailSerializer, description="The order is cancelled."),
            202: OpenApiResponse(
                OrderDetailSerializer,
                description="A cancellation was requested (`cancel_requested: true`) and is being carried out: "
                "the order is still `pending` until what was done is undone, then `cancelled`. Poll the order.",
            ),
            **errors.responses,
        },
    )
    def post(self, request: Request, order_id: str) -> Response:
        order_request_cancel(order=order_for(request, order_id))
        with read_snapshot():
            order = order_for(request, order_id)
            body = render_order(order)
        done = order.status == Order.Status.CANCELLED
        return Response(body, status=status.HTTP_200_OK if done else status.HTTP_202_ACCEPTED)


@extend_schema(exclude=True)
class NotFoundApi(APIView):
    """Any other path under the API answers a 404 in the API's error shape, not an HTML page."""

    def _not_found(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        if not request.path_info.endswith("/") and _is_endpoint(request.path_info + "/"):
            raise NotFound(f"No such endpoint. Did you mean {request.path}/ (with a trailing slash)?")
        raise NotFound("No such endpoint.")

    get = post = put = patch = delete = _not_found


def _is_endpoint(path: str) -> bool:
    try:
        match = resolve(path)
    except Resolver404:
        return False
    return getattr(match.func, "view_class", None) is not NotFoundApi
