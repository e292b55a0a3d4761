"""``python -m devtools.launcher run --embedded`` end to end, as ``make run`` on a bare laptop.

It proves what no unit test can: that embedded PostgreSQL and Redis start (as root, here),
migrate and seed work, the launcher's supervisor brings up web, worker and beat, ``/healthz`` is
green, a worker killed with SIGKILL is restarted and the system goes on (an order placed through
the API is confirmed), and one SIGINT takes everything down again, the servers the launcher
started included. It starts its
own servers on a free port and socket, so it never touches the system PostgreSQL or Redis.
"""

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
# initdb, the first migrate and the worker's start take a while on a cold machine.
STARTUP_TIMEOUT = 150
STOP_TIMEOUT = 30
# What the launcher must not inherit from the test session: it would skip the embedded servers
# (URLs) or run the test settings, where DEBUG is off and seed_demo refuses to run.
INHERITED_VARIABLES_TO_DROP = ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE", "PORT")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str) -> tuple[int, dict | None]:
    """Status and JSON body; status 0 while nothing listens yet."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        try:
            return error.code, json.loads(error.read())
        except ValueError:
            return error.code, None
    except (urllib.error.URLError, OSError, ValueError):
        return 0, None


def embedded_servers(data_dir: Path) -> list[psutil.Process]:
    """The embedded PostgreSQL and Redis, found through their pid files.

    Not among the launcher's descendants for PostgreSQL: pg_ctl detaches the postmaster, which
    init then adopts. Each pid is checked against the process' command line, so a recycled pid
    can never make the cleanup below kill an unrelated process.
    """
    found: list[psutil.Process] = []
    postmaster_file = data_dir / "pg" / "postmaster.pid"
    candidates: list[tuple[Path, str]] = [(postmaster_file, str(data_dir / "pg"))]
    for pid_file in (data_dir / "redis").glob("redis-*.pid"):
        port = pid_file.stem.removeprefix("redis-")
        candidates.append((pid_file, f"127.0.0.1:{port}"))
    for pid_file, marker in candidates:
        try:
            pid = int(pid_file.read_text().split()[0])
            process = psutil.Process(pid)
            if marker in " ".join(process.cmdline()):
                found.append(process)
        except (OSError, ValueError, IndexError, psutil.Error):
            continue
    return found


def describe(process: psutil.Process) -> str:
    try:
        return f"{process.pid} {' '.join(process.cmdline())[:120]}"
    except psutil.Error:
        return str(process.pid)


def system_processes(launcher: subprocess.Popen, data_dir: Path) -> list[psutil.Process]:
    """Every process the launcher is responsible for, at this moment."""
    processes: list[psutil.Process] = []
    try:
        processes = psutil.Process(launcher.pid).children(recursive=True)
    except psutil.Error:
        pass
    known = {process.pid for process in processes}
    return processes + [process for process in embedded_servers(data_dir) if process.pid not in known]


def kill_everything(launcher: subprocess.Popen, data_dir: Path) -> None:
    """Leave nothing running, whatever state the test stopped in."""
    leftovers = system_processes(launcher, data_dir)
    with_postmaster = {process.pid for process in embedded_servers(data_dir) if process.name() == "postgres"}
    try:
        os.killpg(launcher.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for process in leftovers:
        try:
            # SIGQUIT is PostgreSQL's immediate shutdown: it takes its backends down with it.
            process.send_signal(signal.SIGQUIT if process.pid in with_postmaster else signal.SIGKILL)
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(leftovers, timeout=10)
    for process in alive:
        try:
            process.kill()
        except psutil.Error:
            pass
    if launcher.poll() is None:
        launcher.wait(timeout=10)


def worker_main_process(launcher: subprocess.Popen) -> psutil.Process | None:
    """The Celery worker's main process: a child of the launcher (its pool are grandchildren)."""
    for child in psutil.Process(launcher.pid).children():
        try:
            if "worker" in child.cmdline() and any("celery" in part for part in child.cmdline()):
                return child
        except psutil.Error:
            continue
    return None


def api(port: int, token: str, method: str, path: str, body: dict | None = None) -> tuple[int, dict | None]:
    headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
    if method == "POST":
        headers["Idempotency-Key"] = str(uuid.uuid4())
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, None


def kill_the_worker_and_see_the_system_go_on(launcher: subprocess.Popen, log_path: Path, port: int) -> None:
    worker = worker_main_process(launcher)
    assert worker is not None, "no Celery worker among the launcher's processes"
    os.killpg(worker.pid, signal.SIGKILL)  # the main process and its pool, as the OOM killer might
    deadline = time.monotonic() + 60
    restarted = None
    while time.monotonic() < deadline and restarted is None:
        time.sleep(0.5)
        candidate = worker_main_process(launcher)
        if candidate is not None and candidate.pid != worker.pid:
            restarted = candidate
    assert restarted is not None, "the launcher did not start the worker again"
    output = log_path.read_text(errors="replace")
    assert re.search(rf"worker \(pid {worker.pid}\) was killed by SIGKILL after .* restarting it in 1 s", output)
    assert launcher.poll() is None, "the launcher must keep the system running"

    token = re.search(r"storefront API token \(client \S+\): (\S+)", output)[1]
    status, placed = api(
        port,
        token,
        "POST",
        "/api/v1/orders/",
        {
            "customer": {"email": "ann@example.com", "name": "Ann Smith"},
            "lines": [{"sku": "SKU-1", "quantity": 1}],
            "payment": {"token": "tok_visa"},
            "shipping_address": {"line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE"},
        },
    )
    assert status == 202, placed
    order = None
    while time.monotonic() < deadline + 60:
        _, order = api(port, token, "GET", f"/api/v1/orders/{placed['id']}/")
        if order and order["status"] == "confirmed":
            break
        time.sleep(1)
    assert order and order["status"] == "confirmed", f"the order placed after the restart: {order}"


@pytest.mark.slow
def test_run_embedded_serves_a_healthy_system_restarts_a_killed_worker_and_stops_on_sigint(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    log_path = tmp_path / "launcher.log"
    port = free_port()
    env = {name: value for name, value in os.environ.items() if name not in INHERITED_VARIABLES_TO_DROP}
    env["PYTHONUNBUFFERED"] = "1"
    started = time.monotonic()
    with open(log_path, "wb") as log:
        launcher = subprocess.Popen(
            [
                sys.executable, "-m", "devtools.launcher", "run",
                "--embedded", "--data-dir", str(data_dir), "--port", str(port),
            ],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        status, body = 0, None
        deadline = started + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            assert launcher.poll() is None, f"the launcher exited early with code {launcher.returncode}"
            status, body = get_json(f"http://127.0.0.1:{port}/healthz")
            if status == 200:
                break
            time.sleep(1)
        assert status == 200, f"/healthz still answered {status} after {STARTUP_TIMEOUT} s: {body}"
        print(f"healthy after {time.monotonic() - started:.1f} s")

        assert body is not None and body["status"] == "ok", body
        assert {"database", "redis", "celery_workers"} <= set(body["checks"]), body
        assert all(check["ok"] for check in body["checks"].values()), body

        output = log_path.read_text(errors="replace")
        assert "embedded PostgreSQL" in output and "embedded Redis" in output
        assert f"http://127.0.0.1:{port}/admin/" in output
        credentials = data_dir / "demo-admin.txt"
        assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
        password = credentials.read_text().split("password: ", 1)[1].strip()
        assert f"admin / {password}" in output, "the launcher must show the admin's credentials"

        kill_the_worker_and_see_the_system_go_on(launcher, log_path, port)
        print(f"worker restarted and an order confirmed after {time.monotonic() - started:.1f} s")

        running = system_processes(launcher, data_dir)
        assert len(embedded_servers(data_dir)) == 2, "expected the embedded PostgreSQL and Redis"
        stopping = time.monotonic()
        launcher.send_signal(signal.SIGINT)
        try:
            code = launcher.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the launcher did not exit within {STOP_TIMEOUT} s of SIGINT")
        remaining = max(1.0, STOP_TIMEOUT - (time.monotonic() - stopping))
        _, alive = psutil.wait_procs(running, timeout=remaining)
        assert not alive, f"still running after the launcher exited: {[describe(process) for process in alive]}"
        assert code == 128 + signal.SIGINT, f"the launcher exited with {code}"
        print(f"stopped in {time.monotonic() - stopping:.1f} s; {len(running)} processes gone")
    except BaseException:
        print(f"---- launcher output ({log_path}) ----")
        print("\n".join(log_path.read_text(errors="replace").splitlines()[-200:]))
        raise
    finally:
        kill_everything(launcher, data_dir)
