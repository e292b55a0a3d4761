"""Fixtures of the storefront API tests."""

from collections.abc import Callable

import pytest
from rest_framework.test import APIClient

from inventory.models import Product
from testing.storefront import make_api_client, stock_catalog


@pytest.fixture
def api_client_factory() -> Callable[[str], APIClient]:
    return make_api_client


@pytest.fixture
def shop(api_client_factory) -> APIClient:
    return api_client_factory("shop-a")


@pytest.fixture
def other_shop(api_client_factory) -> APIClient:
    return api_client_factory("shop-b")


@pytest.fixture
def catalog() -> dict[str, Product]:
    return stock_catalog()
