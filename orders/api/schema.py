"""What the storefront API documents in its OpenAPI schema beyond what drf-spectacular infers
from the serializers: the answers besides success, headers and parameters.

Each operation names the error codes it can answer with (orders.api.errors.ERROR_CODES), and
the schema lists them in the description of each error response, not as an enum: a client
generated from the schema must keep working when a code is added."""

from dataclasses import dataclass
from typing import Any

from drf_spectacular.plumbing import deep_import_string
from drf_spectacular.settings import spectacular_settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse

from orders.api.errors import ERROR_CODES
from orders.api.pagination import PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX
from orders.api.serializers import ORDER_ID_MAX, ErrorSerializer

IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
IDEMPOTENCY_KEY_MAX_LENGTH = 255


STATUS_TITLES = {
    400: "Invalid request.",
    401: "Not authenticated.",
    404: "Not found.",
    405: "Method not allowed.",
    406: "Not acceptable.",
    409: "Conflict.",
    413: "Request too large.",
    415: "Unsupported media type.",
    422: "Idempotency-Key reused.",
    429: "Throttled.",
    503: "Service unavailable.",
}
# Every operation needs a token, is throttled, reads the database and answers JSON only.
EVERY_OPERATION = ("not_authenticated", "authentication_failed", "not_acceptable", "throttled", "service_unavailable")
# The answers that come with a Retry-After header (orders.api.errors and DRF's throttling).
WITH_RETRY_AFTER = ("idempotency_key_in_use", "throttled", "service_unavailable")


@dataclass(frozen=True)
class OperationErrors:
    """An operation's error responses and the Retry-After header some of them carry (headers
    are parameters in drf-spectacular, so both go into its extend_schema)."""

    responses: dict[int, OpenApiResponse]
    retry_after: OpenApiParameter


def operation_errors(*codes: str, **meanings: str) -> OperationErrors:
    """The error answers of one operation: the ``codes`` it can send besides those of every
    operation, by status. ``meanings`` says what a code means for this operation where the
    general meaning is too vague (what was not found)."""
    chosen = [*codes, *EVERY_OPERATION]
    by_status: dict[int, list[str]] = {}
    for code in chosen:
        by_status.setdefault(ERROR_CODES[code].status, []).append(code)
    responses = {
        status: OpenApiResponse(ErrorSerializer, description=_error_description(status, names, meanings))
        for status, names in sorted(by_status.items())
    }
    retry_after = OpenApiParameter(
        "Retry-After",
        {"type": "integer", "minimum": 1},
        OpenApiParameter.HEADER,
        required=True,
        response=sorted({ERROR_CODES[code].status for code in chosen if code in WITH_RETRY_AFTER}),
        description="seconds to wait before retrying",
    )
    return OperationErrors(responses, retry_after)


def _error_description(status: int, codes: list[str], meanings: dict[str, str]) -> str:
    listed = "\n".join(f"- `{code}`: {meanings.get(code, ERROR_CODES[code].meaning)}" for code in codes)
    return f"{STATUS_TITLES[status]} `error.code` is one of:\n\n{listed}"


ORDER_ID = OpenApiParameter(
    "order_id",
    {"type": "integer", "format": "int64", "minimum": 1, "maximum": ORDER_ID_MAX},
    OpenApiParameter.PATH,
    description="the order's id",
)
ORDER_STATUS_FILTER = OpenApiParameter(
    "status",
    {"$ref": "#/components/schemas/OrderStatusEnum"},
    OpenApiParameter.QUERY,
    description="only orders in this status",
)


PAGINATION_PARAMETERS = [
    OpenApiParameter("cursor", OpenApiTypes.STR, OpenApiParameter.QUERY, description="from `next` or `previous`"),
    OpenApiParameter(
        "page_size",
        {"type": "integer", "minimum": 1, "maximum": PAGE_SIZE_MAX, "default": PAGE_SIZE_DEFAULT},
        OpenApiParameter.QUERY,
        description=f"1 to {PAGE_SIZE_MAX}, default {PAGE_SIZE_DEFAULT}; any other value is a 400",
    ),
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


def postprocess_enum_labels(result: dict[str, Any], generator: Any, **kwargs: Any) -> dict[str, Any]:
    """A POSTPROCESSING_HOOK, after drf-spectacular's enum components: describe each enum by
    the labels that say more than their value ("superseded": superseded by a later attempt).

    drf-spectacular's own choice descriptions (ENUM_GENERATE_CHOICE_DESCRIPTION, off) list every
    choice, "AD - AD" included, and repeat the list in every field with help text that uses the
    enum: the country list took 17 KB of a 45 KB schema."""
    schemas = result.get("components", {}).get("schemas", {})
    for name, choices in spectacular_settings.ENUM_NAME_OVERRIDES.items():
        component = schemas.get(name)
        if component is None:
            continue
        labelled = [f"* `{value}`: {label}" for value, label in _choice_pairs(choices) if str(label) != str(value)]
        if labelled:
            component["description"] = "\n".join(labelled)
    return result


def _choice_pairs(choices: Any) -> list[tuple[Any, Any]]:
    if isinstance(choices, str):
        choices = deep_import_string(choices)
    choices = getattr(choices, "choices", choices)
    return [choice if isinstance(choice, tuple | list) else (choice, choice) for choice in choices]
