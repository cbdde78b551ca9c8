"""Helpers for the cross-process hook tests: a private redis-server, server processes that
register hooks, and client processes that run a snippet and print a JSON result.

``python hook_nodes.py APP [APP...]`` registers `Service` under each app path, prints
``READY <node>`` and serves until its stdin closes (or it is killed).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))


class Service:
    """The handler the server processes register."""

    def add(self, a, b=0, *, scale=1):
        return (a + b) * scale

    def who(self):
        import hornbeam_erlang as h

        return h.node()

    def opaque(self):
        return object()

    def boom(self):
        raise ValueError("remote failure")

    def slow(self, seconds):
        time.sleep(seconds)
        return seconds

    def block(self):
        # Tells the test it is inside the call, then never returns (the test kills the process).
        print("IN block", flush=True)
        time.sleep(3600)

    def count(self, n, key=None):
        import hornbeam_erlang as h

        try:
            for i in range(n):
                if key:
                    h.state_set(key, i + 1)  # how many chunks the generator has produced
                yield i
        finally:
            if key:
                h.state_set(key + ":closed", True)

    def mark(self, key, value):
        import hornbeam_erlang as h

        h.state_set(key, value)


class Redis:
    """A private redis-server on a free loopback port, stopped by its PID."""

    def __init__(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            import pytest

            pytest.fail("redis-server is not installed: apt-get install redis-server (or "
                        "`make redis-server`)", pytrace=False)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)


def env_for(url: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["HORNBEAM_URL"] = url
    env["PYTHONPATH"] = HERE + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


class Node:
    """A server process: `name`, `proc`, `kill()`, `stop()`, `readline()`."""

    def __init__(self, url: str, apps: list[str], wait: bool = True, **extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "hook_nodes.py"), *apps],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env_for(url, **extra))
        self.name = ""
        if wait:
            self.ready()

    def ready(self) -> None:
        """Waits for the READY line (the node has registered its hooks)."""
        line = self.readline()
        if not line.startswith("READY "):
            self.kill()
            raise RuntimeError(f"server did not start: {line!r}")
        self.name = line.split(" ", 1)[1]

    def readline(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._close()

    def _close(self) -> None:
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None and not f.closed:
                try:
                    f.close()
                except OSError:  # stdin of a killed process: the pipe is broken
                    pass

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close()


PRELUDE = "import json, os, sys, time\nimport hornbeam_erlang as h\nimport hornbeam_ml\nout = None\n"


def client(url: str, code: str, **extra: str) -> subprocess.Popen[str]:
    """Starts a client process running `code` (which sets `out`); see `result`."""
    script = PRELUDE + textwrap.dedent(code) + "\nprint('RESULT ' + json.dumps(out), flush=True)\n"
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env_for(url, **extra))


def result(proc: subprocess.Popen[str], timeout: float = 120) -> Any:
    stdout, stderr = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, stderr
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, stdout + stderr
    return json.loads(lines[-1][len("RESULT "):])


def run(url: str, code: str, **extra: str) -> Any:
    return result(client(url, code, **extra))


def main(apps: list[str]) -> None:
    import hornbeam_erlang as h

    for app in apps:
        h.register_hook(app, Service)
    print("READY " + h.node(), flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main(sys.argv[1:])
