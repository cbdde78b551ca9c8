"""Shared fixtures for the example-app tests: a real uvicorn on a free 127.0.0.1 port.

`serve("examples.websocket_chat.app:application")` starts uvicorn in a subprocess, waits until it
accepts connections and returns its base URL (``http://127.0.0.1:PORT``); every server started is
stopped by its PID when the test ends.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = "/usr/bin/chromium"

#: How to install each prerequisite of these tests (`.ci/run` installs them all).
INSTALL_HINTS = {
    "chromium": "apt-get install chromium (or run .ci/run, which installs every prerequisite)",
    "redis-server": "apt-get install redis-server (or `make redis-server`)",
    "cc": "apt-get install gcc",
}


def require(program: str) -> str:
    """The path of `program`, or a failed test saying how to install it: a missing prerequisite
    is never a pass or a skip."""
    path = program if os.path.isabs(program) else shutil.which(program)
    if path is None or not os.access(path, os.X_OK):
        hint = INSTALL_HINTS.get(os.path.basename(program), "install it")
        pytest.fail(f"{program} is not installed: {hint}", pytrace=False)
    return path


@pytest.fixture
def chromium() -> str:
    """Debian's chromium, which the browser tests drive through playwright-core."""
    return require(CHROMIUM)


@pytest.fixture
def redis_server() -> str:
    """The redis-server binary the Redis tests start on a free loopback port."""
    return require("redis-server")


def die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when pytest exits, even when it is killed (so a
    server never outlives a test run that was interrupted before its teardown)."""
    import ctypes
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"uvicorn exited early with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"uvicorn did not listen on port {port} within {timeout}s")


class Server:
    """A running uvicorn: `url` (http), `ws_url` (ws), `port`, `proc`, and `stop()`."""

    def __init__(self, app: str, env: dict[str, str] | None, args: list[str]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
        full_env.update(env or {})
        self.log_path = ARTIFACTS / f"uvicorn-{self.port}.log"
        ARTIFACTS.mkdir(exist_ok=True)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1",
             "--port", str(self.port), "--log-level", "warning", *args],
            cwd=ROOT, env=full_env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=die_with_parent,
        )
        wait_for_port(self.port, self.proc)

    def stop(self) -> None:
        if self.proc.poll() is None:
            # uvicorn --workers runs children in the same session: signal the whole group.
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    """Factory fixture: ``serve(app, env=None, args=())`` -> running `Server`."""
    started: list[Server] = []

    def start(app: str, env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> Server:
        server = Server(app, env, list(args))
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
