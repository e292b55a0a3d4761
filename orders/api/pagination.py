"""Cursor pagination of the storefront API's lists."""

from typing import Any

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

PAGE_SIZE_DEFAULT = 50
PAGE_SIZE_MAX = 100


class StorefrontCursorPagination(CursorPagination):
    """Cursor pagination: pages stay stable while new orders arrive, unlike page numbers."""

    page_size = PAGE_SIZE_DEFAULT
    page_size_query_param = "page_size"
    max_page_size = PAGE_SIZE_MAX

    def get_page_size(self, request: Request) -> int:
        """The page size asked for, or a 400 naming ``page_size``: DRF's own would serve the
        default for a page size it cannot read and cut one too large, silently."""
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        # Three digits at most: int() of thousands of digits is slow, then refused.
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 3 and 1 <= int(raw) <= self.max_page_size):
            raise ValidationError({self.page_size_query_param: [f"Must be an integer from 1 to {self.max_page_size}."]})
        return int(raw)


class ProductPagination(StorefrontCursorPagination):
    ordering = "sku"


class OrderPagination(StorefrontCursorPagination):
    ordering = "-id"


def paginated_response(
    *, pagination_class: type[CursorPagination], serializer_class: type, queryset: Any, request: Request, view: APIView
) -> Response:
    paginator = pagination_class()
    page = paginator.paginate_queryset(queryset, request, view=view)
    return paginator.get_paginated_response(serializer_class(page, many=True).data)
