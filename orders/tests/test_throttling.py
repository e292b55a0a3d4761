"""The per-client rate limit, against the real Redis: atomic between concurrent requests, a
sliding window across the fixed ones it is counted in, and out of the way while Redis is down."""

import itertools
import threading
from types import SimpleNamespace

import pytest
from django.test import override_settings
from redis.exceptions import ConnectionError as RedisConnectionError

from common.redis import get_redis
from orders.api import throttling
from orders.api.throttling import StorefrontClientThrottle

_client_ids = itertools.count(10_000_000)


@pytest.fixture
def client_id():
    pk = next(_client_ids)
    yield pk
    for key in get_redis().scan_iter(f"throttle:storefront_client:{pk}:*"):
        get_redis().delete(key)


def _request(pk: int) -> SimpleNamespace:
    return SimpleNamespace(user=SimpleNamespace(pk=pk, is_authenticated=True))


def _rate(rate: str):
    return override_settings(REST_FRAMEWORK={"DEFAULT_THROTTLE_RATES": {"storefront_client": rate}})


def _allowed(pk: int) -> bool:
    return StorefrontClientThrottle().allow_request(_request(pk), None)


def test_concurrent_requests_never_take_more_than_the_budget(client_id):
    allowed = []
    start = threading.Barrier(20)

    def take() -> None:
        start.wait()
        for _ in range(5):
            allowed.append(_allowed(client_id))

    with _rate("30/hour"):
        threads = [threading.Thread(target=take) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert allowed.count(True) == 30, "exactly the budget, refused requests not counted"
    assert len(allowed) == 100


def test_the_previous_window_counts_by_how_much_of_it_the_window_still_covers(client_id, monkeypatch):
    with _rate("10/min"):
        monkeypatch.setattr(throttling.time, "time", lambda: 6000.0 + 59)  # the end of a window
        assert [_allowed(client_id) for _ in range(11)] == [True] * 10 + [False]
        # A quarter into the next window, three quarters of the previous one still count.
        monkeypatch.setattr(throttling.time, "time", lambda: 6060.0 + 15)
        throttle = StorefrontClientThrottle()
        assert [throttle.allow_request(_request(client_id), None) for _ in range(4)] == [True] * 3 + [False]
        # 7.5 + 3 is over 10. Under it once fewer than 7 of the previous 10 still count: 3 s on.
        assert throttle.wait() == 4
        monkeypatch.setattr(throttling.time, "time", lambda: 6060.0 + 15 + 3)
        assert not _allowed(client_id), "exactly 7 + 3: still the whole budget"
        monkeypatch.setattr(throttling.time, "time", lambda: 6060.0 + 15 + 4)
        assert _allowed(client_id)


def test_retry_after_a_full_window_is_when_its_weight_in_the_next_one_lets_a_request_through(client_id, monkeypatch):
    with _rate("10/min"):
        monkeypatch.setattr(throttling.time, "time", lambda: 6000.0 + 59)
        throttle = StorefrontClientThrottle()
        assert [throttle.allow_request(_request(client_id), None) for _ in range(11)] == [True] * 10 + [False]
        # At the window's end its ten requests weigh fully in the next one: 1 s is not enough.
        assert throttle.wait() == 2
        monkeypatch.setattr(throttling.time, "time", lambda: 6000.0 + 60)
        assert not _allowed(client_id)
        monkeypatch.setattr(throttling.time, "time", lambda: 6000.0 + 61)
        assert _allowed(client_id)


def _redis_down(monkeypatch) -> None:
    def down(**_):
        raise RedisConnectionError("Connection refused")

    monkeypatch.setattr(throttling, "_take", down)
    monkeypatch.setattr(throttling, "_local_windows", throttling._LocalWindows())


def test_with_redis_down_requests_go_through_within_the_budget_counted_in_this_process(client_id, monkeypatch):
    _redis_down(monkeypatch)
    with _rate("3/min"):
        assert [_allowed(client_id) for _ in range(4)] == [True, True, True, False]
        assert _allowed(client_id + 1), "each client its own budget"
        throttle = StorefrontClientThrottle()
        assert not throttle.allow_request(_request(client_id), None) and throttle.wait() >= 1


def test_the_local_counts_are_bounded(monkeypatch):
    _redis_down(monkeypatch)
    monkeypatch.setattr(throttling._LocalWindows, "MAX_KEYS", 100)
    with _rate("1/min"):
        for pk in range(1000):
            _allowed(pk)
    assert len(throttling._local_windows) == 100


@pytest.fixture
def address():
    address = f"198.51.100.{next(_client_ids) % 250}"
    yield address
    for key in get_redis().scan_iter("throttle:storefront_address:*"):
        get_redis().delete(key)


def test_requests_without_a_valid_token_are_throttled_by_address(address, settings, db):
    from rest_framework.test import APIClient

    from testing.storefront import ORDERS_URL, make_api_client

    shop = make_api_client("shop-by-address")
    rates = {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "storefront_address": "4/min"}
    with override_settings(REST_FRAMEWORK={**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}):
        anonymous, bad_token = APIClient(REMOTE_ADDR=address), APIClient(REMOTE_ADDR=address)
        bad_token.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)
        statuses = [client.get(ORDERS_URL).status_code for client in (anonymous, bad_token) * 2]
        assert statuses == [401, 401, 401, 401]
        refused = bad_token.get(ORDERS_URL)
        assert refused.status_code == 429 and int(refused["Retry-After"]) > 0
        assert refused.json()["error"]["code"] == "throttled"
        assert anonymous.get(ORDERS_URL).status_code == 429
        # A forged X-Forwarded-For is not a new address (no trusted proxy is configured).
        assert anonymous.get(ORDERS_URL, HTTP_X_FORWARDED_FOR="203.0.113.9").status_code == 429
        assert APIClient(REMOTE_ADDR="192.0.2.77").get(ORDERS_URL).status_code == 401, "each address its own"
        shop.defaults["REMOTE_ADDR"] = address
        assert shop.get(ORDERS_URL).status_code == 200, "a client with a valid token has its own budget"
    for key in get_redis().scan_iter("throttle:storefront_address:192.0.2.77*"):
        get_redis().delete(key)


def test_an_ipv6_sender_is_counted_by_its_slash_64():
    assert throttling._network_of("2001:db8:1:2:aaaa::1") == throttling._network_of("2001:db8:1:2:ffff::9")
    assert throttling._network_of("2001:db8:1:2::1") != throttling._network_of("2001:db8:1:3::1")
    assert throttling._network_of("::ffff:192.0.2.1") == "192.0.2.1"


def test_a_storefront_gets_ten_orders_a_second_by_default():
    from config.settings import base

    assert base.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["storefront_client"] == "600/min"
