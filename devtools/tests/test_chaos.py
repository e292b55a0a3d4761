"""The chaos harness at small scale, every fault on: nothing may be silently corrupted."""

import os
import subprocess
import sys

import pytest

from devtools.processes import ROOT, database_url


def _test_database_url() -> str:
    """The harness makes its own database, ``<name>_chaos``: name it after the test database so
    a test run never drops the database of a chaos run someone started by hand."""
    from django.conf import settings

    settings_dict = dict(settings.DATABASES["default"])
    if not settings_dict["NAME"].startswith("test_"):
        settings_dict["NAME"] = f"test_{settings_dict['NAME']}"
    return database_url(settings_dict)


@pytest.mark.slow
def test_chaos_run_with_every_fault_ends_with_zero_violations_and_every_saga_settled():
    result = subprocess.run(
        [
            sys.executable, "manage.py", "chaos",
            "--orders", "200", "--rate", "50",
            "--duplicate-delivery", "0.2", "--reorder-delivery", "0.2",
            "--gateway-transient", "0.1", "--gateway-timeout-after-charge", "0.1", "--carrier-transient", "0.1",
            "--declined", "0.05", "--sold-out", "0.05", "--cancel", "0.1", "--client-retry", "0.2",
            "--kill-every", "0.8", "1.5", "--worker-restart-every", "3", "--redis-restarts", "1",
            "--pg-terminate-every", "2",
        ],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.dev", "DATABASE_URL": _test_database_url()},
        capture_output=True,
        text=True,
        timeout=420,
    )  # fmt: skip
    output = result.stdout + result.stderr
    last = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, output[-5000:]
    assert last.startswith("orders=200 ") and " violations=0 worker_deaths=0 " in last, output[-3000:]
    summary = dict(line.strip().split(": ", 1) for line in result.stdout.splitlines() if line.startswith("  "))
    assert int(summary["worker_children_killed"]) > 0 and int(summary["redis_restarts"]) == 1
    assert int(summary["pg_connections_terminated"]) > 0
    assert summary["settled"] == "True" and summary["idempotency_mismatches"] == "0"
