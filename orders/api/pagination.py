"""Cursor pagination of the storefront API's lists."""

from typing import Any

from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView


class StorefrontCursorPagination(CursorPagination):
    """Cursor pagination: pages stay stable while new orders arrive, unlike page numbers."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 100


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
