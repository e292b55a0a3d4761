"""The fixtures of the tests that drive the console in a real headless Chromium against the
live system (console/tests/live_console.py has the rest of what they share)."""

import threading
from collections.abc import Iterator

import pytest
from django.db import connection, connections

from common.heartbeat import BEAT, heartbeat_clear, heartbeat_write
from console.bulk_repairs import bulk_repairs_advance
from console.tests.live_console import BROWSER_MISSING, CHROMIUM, CHROMIUM_ARGS
from outbox.relay import relay_drain
from sagas.orchestrator import saga_sweep


@pytest.fixture
def browser(monkeypatch):
    # Reached with a browser missing only in CI (BROWSER_MARKS skip elsewhere), where it is a
    # failure rather than a skip.
    if BROWSER_MISSING:
        pytest.fail(f"CI runs the browser tests, but {BROWSER_MISSING}")
    from playwright import sync_api

    # Playwright's sync API keeps an event loop in this thread; the ORM calls the test makes
    # between browser steps are still plain synchronous code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
            # Under Playwright the test's queries run in another context, hence on another
            # connection (Django's connections are context-local): close it, or it would keep
            # the test database from being dropped.
            connections.close_all()


@pytest.fixture
def beat(live_system) -> Iterator[None]:
    """What beat does in production, every half second: its heartbeat from its own tick, and
    the tasks it schedules, which run on the worker: drain the outbox (delayed retries
    included), run the stuck-saga sweeper and advance bulk repairs. While the test has the
    worker stopped, beat stays alive and its tasks wait, as they would in the worker's queue."""
    stop = threading.Event()

    def run() -> None:
        try:
            while not stop.is_set():
                heartbeat_write(role=BEAT, name="test-beat")  # as beat's scheduler tick does
                if live_system.running:
                    relay_drain(max_seconds=2)
                    saga_sweep()
                    bulk_repairs_advance()
                stop.wait(0.5)
        finally:
            heartbeat_clear(role=BEAT, name="test-beat")
            connection.close()

    thread = threading.Thread(target=run, name="test-beat", daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(timeout=10)
