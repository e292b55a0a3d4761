"""``python -m config.launcher run --embedded`` end to end, as ``make run`` on a bare laptop.

It proves what no unit test can: that embedded PostgreSQL and Redis start (as root, here),
migrate and seed work, honcho brings up web, worker and beat, ``/healthz`` is green, and one
SIGINT takes everything down again, the servers the launcher started included. It starts its
own servers on a free port and socket, so it never touches the system PostgreSQL or Redis.
"""

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
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


@pytest.mark.slow
def test_run_embedded_serves_a_healthy_system_and_stops_on_sigint(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    log_path = tmp_path / "launcher.log"
    port = free_port()
    env = {name: value for name, value in os.environ.items() if name not in INHERITED_VARIABLES_TO_DROP}
    env["PYTHONUNBUFFERED"] = "1"
    started = time.monotonic()
    with open(log_path, "wb") as log:
        launcher = subprocess.Popen(
            [
                sys.executable, "-m", "config.launcher", "run",
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
