"""What the WebSocket benchmarks share: a minimal asyncio WebSocket client (one process drives
hundreds of them with one clock), a free loopback port, and percentiles of nanosecond samples."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
import subprocess
import sys
import time
from array import array
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    """uvicorn on a free loopback port (`args`: the app and any extra options), in its own
    process group, stopped by PID; `cpu_seconds()` reads its CPU time from /proc."""

    def __init__(self, args: list[str]):
        self.port = free_port()
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", *args, "--host", "127.0.0.1", "--port", str(self.port),
             "--log-level", "warning"],
            cwd=ROOT, env=env, start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"uvicorn {args[0]} exited with {self.proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"uvicorn {args[0]} did not start") from None
                time.sleep(0.05)

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


def percentile(values: "array[int]", q: float) -> float:
    """The `q` quantile of nanosecond samples, in milliseconds (NaN when there are none)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))]) / 1e6


class WsClient(asyncio.Protocol):
    """A minimal WebSocket client: handshake, unfragmented frames, ping answers. Subclasses get
    each text frame through `on_text`; `opened` completes after the handshake."""

    def __init__(self, idx: int, host: str, path: str):
        self.idx = idx
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n").encode()
        self.buf = bytearray()
        self.handshaken = False
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: Optional[asyncio.Transport] = None

    def on_text(self, payload: bytes) -> None:
        """Called with each text frame's payload."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.handshaken:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.buf.startswith(b"HTTP/1.1 101"):
                self.opened.set_exception(ConnectionError(bytes(self.buf[:end]).decode(errors="replace")))
                return
            del self.buf[:end + 4]
            self.handshaken = True
            self.opened.set_result(None)
        buf, pos, size = self.buf, 0, len(self.buf)
        while size - pos >= 2:
            opcode, length, start = buf[pos] & 0x0F, buf[pos + 1] & 0x7F, pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length, start = int.from_bytes(buf[pos + 2:pos + 4], "big"), pos + 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, start = int.from_bytes(buf[pos + 2:pos + 10], "big"), pos + 10
            if size < start + length:
                break
            payload = bytes(buf[start:start + length])
            pos = start + length
            if opcode == 1:
                self.on_text(payload)
            elif opcode == 9:
                self.send_frame(0xA, payload)
            elif opcode == 8 and self.transport is not None:
                self.transport.close()
        del buf[:pos]

    def send_frame(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        if n < 126:
            header = bytes((0x80 | opcode, 0x80 | n))
        elif n < 65536:
            header = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
        else:
            header = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
        # An all-zero masking key is a valid key that leaves the payload as is: no XOR pass in Python.
        assert self.transport is not None
        self.transport.write(header + b"\0\0\0\0" + payload)

    def send_text(self, text: str) -> None:
        self.send_frame(1, text.encode())

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
