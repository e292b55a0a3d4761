"""The one place where errors become HTTP answers, every 4xx and 503 in one shape:

    {"error": {"code": "validation_error", "message": "...", "fields": {"lines.0.quantity": ["..."]}}}

``code`` is stable and meant for programs, ``message`` for people, ``fields`` maps the path of
each offending input (dotted, list items by index) to its problems and is empty when the
problem is not with one field. Domain errors of the orders context are mapped here too, so
that views never translate exceptions themselves.
"""

import logging
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from redis.exceptions import RedisError
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from orders.exceptions import IdempotencyKeyInUse, IdempotencyKeyReused, InvalidOrder, OrderNotCancellable

logger = logging.getLogger(__name__)

VALIDATION_ERROR = "validation_error"
SERVICE_UNAVAILABLE = "service_unavailable"
NON_FIELD = "non_field_errors"


# Every code the API answers with, its HTTP status and what it means to a client: the schema
# documents each operation's codes from here (orders.api.schema). DRF's own codes are here too
# (parse_error, not_authenticated, ...): they reach clients unchanged.
@dataclass(frozen=True)
class ErrorCode:
    status: int
    meaning: str


ERROR_CODES: dict[str, ErrorCode] = {
    "validation_error": ErrorCode(400, "an input is invalid; `fields` names each one with its problems"),
    "parse_error": ErrorCode(400, "the body is not valid JSON"),
    "not_authenticated": ErrorCode(401, "no token: send `Authorization: Token <key>`"),
    "authentication_failed": ErrorCode(401, "the token is malformed or unknown, or its client is deactivated"),
    "not_found": ErrorCode(404, "no such resource"),
    "method_not_allowed": ErrorCode(405, "the path does not take this method"),
    "not_acceptable": ErrorCode(406, "the `Accept` header rules out `application/json`, the only type served"),
    "idempotency_key_in_use": ErrorCode(
        409, "a request with this `Idempotency-Key` is still running; retry after `Retry-After` seconds"
    ),
    "order_not_cancellable": ErrorCode(
        409, "too late: the order is confirmed, or its saga is past the step where it can be undone"
    ),
    "request_too_large": ErrorCode(413, "the body is larger than 1 MiB"),
    "unsupported_media_type": ErrorCode(415, "the body is not `application/json`"),
    "idempotency_key_reused": ErrorCode(422, "this `Idempotency-Key` was already used for a different request"),
    "throttled": ErrorCode(429, "too many requests from this client; retry after `Retry-After` seconds"),
    "service_unavailable": ErrorCode(
        503, "the database or Redis is briefly unavailable and nothing was done; retry after `Retry-After` seconds"
    ),
}


def error_code_help() -> str:
    """The description of ErrorDetail.code: every code, however it comes about."""
    names = ", ".join(f"`{code}` ({error.status})" for code, error in ERROR_CODES.items())
    return (
        "stable, for programs (`message` is for people). Each operation lists the codes it can answer with; "
        f"all of them: {names}. New codes may be added: handle an unknown one by its HTTP status."
    )


# Domain error -> (HTTP status, error code). The first match wins.
DOMAIN_ERRORS: list[tuple[type[Exception], int, str]] = [
    (InvalidOrder, status.HTTP_400_BAD_REQUEST, VALIDATION_ERROR),
    (OrderNotCancellable, status.HTTP_409_CONFLICT, "order_not_cancellable"),
    (IdempotencyKeyInUse, status.HTTP_409_CONFLICT, "idempotency_key_in_use"),
    (IdempotencyKeyReused, status.HTTP_422_UNPROCESSABLE_ENTITY, "idempotency_key_reused"),
]


class RequestTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "request_too_large"


def error_body(*, code: str, message: str, fields: dict[str, list[str]] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "fields": fields or {}}}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's EXCEPTION_HANDLER. Anything it does not know stays a 500, logged with its traceback."""
    if isinstance(exc, RequestDataTooBig):
        # Django refuses a body over DATA_UPLOAD_MAX_MEMORY_SIZE before reading it; it is the
        # client's request that is too large, not a suspicious one (Django's default: a 400).
        exc = RequestTooLarge(f"The request body is larger than {_megabytes()} MiB.")
    for error_class, http_status, code in DOMAIN_ERRORS:
        if isinstance(exc, error_class):
            fields = getattr(exc, "errors", None) or {}
            set_rollback()
            body = error_body(code=code, message=_domain_message(exc, fields), fields=fields)
            # The first request with this key is still running: ask for a retry in a moment.
            headers = {"Retry-After": "1"} if isinstance(exc, IdempotencyKeyInUse) else None
            return Response(body, http_status, headers=headers)
    if isinstance(exc, OperationalError | InterfaceError | RedisError):
        # The database or Redis went away under the request (a restart, a failover, a
        # terminated connection): nothing was committed, so the client may simply retry.
        logger.warning("dependency unavailable during a request", exc_info=exc)
        set_rollback()
        body = error_body(code=SERVICE_UNAVAILABLE, message="A dependency is briefly unavailable; retry shortly.")
        return Response(body, status.HTTP_503_SERVICE_UNAVAILABLE, headers={"Retry-After": "1"})
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        fields = _flatten(exc.detail)
        response.data = error_body(code=VALIDATION_ERROR, message=_summary(fields), fields=fields)
    else:
        response.data = error_body(code=_code_of(exc), message=_message_of(exc, response.data))
    return response


def _domain_message(exc: Exception, fields: dict[str, list[str]]) -> str:
    return _summary(fields) if fields else str(exc)


def _summary(fields: dict[str, list[str]]) -> str:
    if not fields:
        return "The request is invalid."
    path, problems = next(iter(fields.items()))
    more = len(fields) - 1
    return f"The request is invalid: {path}: {problems[0]}" + (f" (and {more} more)" if more else "")


def _code_of(exc: Exception) -> str:
    detail = getattr(exc, "detail", None)
    code = getattr(detail, "code", None)
    if isinstance(code, str) and code not in ("invalid", "error"):
        return code
    return getattr(exc, "default_code", "error")


def _message_of(exc: Exception, data: Any) -> str:
    detail = getattr(exc, "detail", None)
    if isinstance(detail, str):
        return str(detail)
    if isinstance(data, dict) and "detail" in data:
        return str(data["detail"])
    return str(exc)


def _flatten(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    """DRF's nested error structure as dotted paths: {"lines": [{}, {"sku": [..]}]} becomes
    {"lines.1.sku": [..]}. Errors about an object as a whole are listed under its own path
    (or ``non_field_errors`` at the top)."""
    flat: dict[str, list[str]] = {}

    def add(path: str, message: Any) -> None:
        flat.setdefault(path or NON_FIELD, []).append(str(message))

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in (NON_FIELD, api_settings.NON_FIELD_ERRORS_KEY):
                    walk(value, path)
                else:
                    walk(value, f"{path}.{key}" if path else str(key))
        elif isinstance(node, list):
            if all(not isinstance(item, dict | list) for item in node):
                for item in node:
                    add(path, item)
            else:
                for index, item in enumerate(node):
                    walk(item, f"{path}.{index}" if path else str(index))
        else:
            add(path, node)

    walk(detail, prefix)
    return flat


def _megabytes() -> str:
    return f"{settings.DATA_UPLOAD_MAX_MEMORY_SIZE / (1024 * 1024):g}"
