"""What the tests that drive the console in a real headless Chromium share (their fixtures,
the browser and beat, are in this package's conftest.py).

Where Chromium or Playwright is missing, those tests are skipped with the reason on a
developer's machine, and failed in CI (the ``CI`` environment variable set): CI installs
Debian's package, and a browser test that silently stops running there proves nothing.
"""

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _browser_missing() -> str:
    """Why no browser test can run here, or "" when one can."""
    if not Path(CHROMIUM).exists():
        return f"no chromium binary at {CHROMIUM} (apt-get install chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install -r requirements-dev.txt)"
    return ""


BROWSER_MISSING = _browser_missing()
IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")

# The pytestmark of a browser test module.
BROWSER_MARKS = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.worker,
    pytest.mark.skipif(bool(BROWSER_MISSING) and not IN_CI, reason=BROWSER_MISSING),
]


def log_in(page, url: str, *, username: str, password: str) -> None:
    """Through the admin's login form, landing on ``url`` (a login page with its ``next``)."""
    page.goto(url)
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
