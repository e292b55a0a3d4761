"""What the storefront API documents in its OpenAPI schema beyond what drf-spectacular infers
from the serializers: the answers besides success, headers and parameters."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse

from orders.api.serializers import ErrorSerializer

IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
IDEMPOTENCY_KEY_MAX_LENGTH = 255


ERROR_DESCRIPTIONS = {
    400: "Invalid request: `fields` names each offending input.",
    401: "Missing or invalid token (`Authorization: Token <key>`).",
    404: "Not found: no such order for this client (another client's order is not found either), "
    "or a page cursor that is not valid.",
    409: "Conflict: see `code` (`idempotency_key_in_use`: retry later; `order_not_cancellable`).",
    413: "The body is larger than 1 MiB.",
    415: "The body is not `application/json`.",
    422: "This Idempotency-Key was already used with a different request.",
    429: "Too many requests from this client; retry after `Retry-After` seconds.",
}
RETRY_AFTER = OpenApiParameter(
    "Retry-After",
    OpenApiTypes.INT,
    OpenApiParameter.HEADER,
    response=[409, 429],
    description="seconds to wait before retrying (on a 409, only while the same key is in flight)",
)


def error_responses(*codes: int) -> dict[int, OpenApiResponse]:
    return {code: OpenApiResponse(ErrorSerializer, description=ERROR_DESCRIPTIONS[code]) for code in (*codes, 401, 429)}


ORDER_ID = OpenApiParameter("order_id", OpenApiTypes.INT, OpenApiParameter.PATH, description="the order's id")


PAGINATION_PARAMETERS = [
    OpenApiParameter("cursor", OpenApiTypes.STR, OpenApiParameter.QUERY, description="from `next` or `previous`"),
    OpenApiParameter("page_size", OpenApiTypes.INT, OpenApiParameter.QUERY, description="1 to 100, default 50"),
]


IDEMPOTENCY_KEY_PARAMETER = OpenApiParameter(
    IDEMPOTENCY_KEY_HEADER,
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    required=True,
    pattern=r"^[!-~]([ -~]{0,253}[!-~])?$",
    description=(
        "1 to 255 printable ASCII characters, unique per request you mean to make (a UUID is a good key). "
        "A retry with the same key and body gets the first response again and creates nothing; "
        "the same key with another body is a 422; while the first request is still running, a 409. "
        "Keys expire after 24 hours."
    ),
)
LOCATION = OpenApiParameter(
    "Location", OpenApiTypes.STR, OpenApiParameter.HEADER, response=[202], description="the order's URL"
)
REPLAYED = OpenApiParameter(
    "Idempotent-Replayed",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    response=[202],
    enum=["true"],
    description="present when this is the stored answer to an earlier request with the same key",
)
