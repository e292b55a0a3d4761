"""The supervisor behind ``make run``: runs the Procfile's processes and restarts one that exits.

A process of the system that exits on its own (a crash, the OOM killer, a bug in a library) is
started again after a backoff that doubles with each quick exit (1 s, 2 s, 4 s ... up to 30 s) and
starts over once it has stayed up a while; each exit is logged with its exit code or signal. The
others keep running meanwhile: one process exiting never stops the system, which is what honcho
did. Stopping is the launcher's call (Ctrl-C, SIGTERM): every process is stopped, SIGTERM to its
process group, then SIGKILL to what is left after a grace period.

Each process runs through ``/bin/sh -c 'exec <command>'`` (so the Procfile's ``${PORT:-8000}``
expands, and the shell is replaced by the process itself) in a session of its own: a terminal's
Ctrl-C reaches the launcher only, which stops the processes in order rather than all at once.
Their output is interleaved on the launcher's, each line prefixed by the process's name.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

FIRST_BACKOFF = 1.0
MAX_BACKOFF = 30.0
# A process that ran this long before exiting is restarted after the first backoff again.
STABLE_AFTER = 30.0
STOP_GRACE = 20.0


@dataclass
class Supervised:
    name: str
    command: str
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff: float = FIRST_BACKOFF
    restart_at: float | None = None
    reader: threading.Thread | None = field(default=None, repr=False)


def read_procfile(path: Path) -> list[tuple[str, str]]:
    """The ``name: command`` lines of a Procfile, in order."""
    entries = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, command = line.partition(":")
        entries.append((name.strip(), command.strip()))
    return entries


def describe_exit(code: int) -> str:
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


class Supervisor:
    def __init__(
        self,
        entries: list[tuple[str, str]],
        *,
        env: dict[str, str],
        cwd: Path,
        say: Callable[[str], None],
        output=None,
        on_stopping: Callable[[], None] = lambda: None,
    ) -> None:
        self.processes = [Supervised(name, command) for name, command in entries]
        self.env = env
        self.cwd = cwd
        self.say = say
        self.output = output or sys.stdout
        # Called first thing when stopping (the launcher then only notes further signals, so a
        # second Ctrl-C cannot cut the stop short).
        self.on_stopping = on_stopping
        self.width = max(len(name) for name, _ in entries)
        self._write_lock = threading.Lock()

    def run(self, *, poll_interval: float = 0.2) -> None:
        """Start every process and keep them running until interrupted (KeyboardInterrupt or the
        launcher's StopRequested); they are all stopped on the way out."""
        try:
            for supervised in self.processes:
                self._start(supervised)
            while True:
                self._check(time.monotonic())
                time.sleep(poll_interval)
        finally:
            self.stop()

    def _check(self, now: float) -> None:
        for supervised in self.processes:
            if supervised.restart_at is not None:
                if now >= supervised.restart_at:
                    supervised.restart_at = None
                    supervised.restarts += 1
                    self._start(supervised)
                continue
            process = supervised.process
            if process is None or process.poll() is None:
                continue
            ran = now - supervised.started_at
            if ran >= STABLE_AFTER:
                supervised.backoff = FIRST_BACKOFF
            delay = supervised.backoff
            supervised.backoff = min(supervised.backoff * 2, MAX_BACKOFF)
            supervised.restart_at = now + delay
            supervised.process = None
            _signal_group(process, signal.SIGKILL)  # what it leaves behind: a worker's pool children
            self.say(
                f"{supervised.name} (pid {process.pid}) {describe_exit(process.returncode)} after {ran:.1f} s;"
                f" restarting it in {delay:g} s"
            )

    def _start(self, supervised: Supervised) -> None:
        supervised.process = subprocess.Popen(
            ["/bin/sh", "-c", f"exec {supervised.command}"],
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        supervised.started_at = time.monotonic()
        supervised.reader = threading.Thread(
            target=self._relay_output, args=(supervised.name, supervised.process), daemon=True
        )
        supervised.reader.start()
        again = f" (restart {supervised.restarts})" if supervised.restarts else ""
        self.say(f"started {supervised.name} (pid {supervised.process.pid}){again}: {supervised.command}")

    def _relay_output(self, name: str, process: subprocess.Popen) -> None:
        prefix = f"{name.ljust(self.width)} | ".encode()
        assert process.stdout is not None
        for line in iter(process.stdout.readline, b""):
            with self._write_lock:
                stream = getattr(self.output, "buffer", None)
                if stream is not None:
                    stream.write(prefix + line)
                    stream.flush()
                else:
                    self.output.write((prefix + line).decode(errors="replace"))
                    self.output.flush()
        process.stdout.close()

    def stop(self) -> None:
        """SIGTERM every process group, wait, SIGKILL what is left."""
        self.on_stopping()
        running = [s for s in self.processes if s.process is not None and s.process.poll() is None]
        for supervised in self.processes:
            supervised.restart_at = None
        for supervised in running:
            self.say(f"stopping {supervised.name} (pid {supervised.process.pid})")
            _signal_group(supervised.process, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for supervised in running:
            try:
                supervised.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"{supervised.name} did not stop within {STOP_GRACE:g} s; killing it")
                _signal_group(supervised.process, signal.SIGKILL)
                supervised.process.wait()
        for supervised in running:
            # Children of the process left in its group (a worker's pool after its main process).
            _signal_group(supervised.process, signal.SIGKILL)
            if supervised.reader is not None:
                supervised.reader.join(timeout=5)


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass
