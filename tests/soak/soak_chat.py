"""Soak test of the WebSocket chat (examples/websocket_chat): many clients, minutes, loopback only.

Starts uvicorn on a free 127.0.0.1 port, connects ``--clients`` clients spread over ``--rooms``
rooms, all join, then random clients send ``--rate`` messages per second (in all) for
``--seconds``. Every ``--sample`` seconds it records the server's RSS (VmRSS) and open file
descriptors. It then checks, and exits 1 if any check fails:

* no lost message: every client received every message sent to its room, once, and no
  ``lagged`` notice;
* memory flat after warm-up: RSS at the end is at most ``--max-growth-pct`` percent plus
  ``--max-growth-mib`` MiB above the first sample taken after the warm-up (a fifth of the run);
* no descriptor leaked: while clients are connected the server holds at most `FDS_PER_CLIENT`
  descriptors per client plus a small slack, and after they all leave it is back to where it started (+ slack).

    .venv/bin/python tests/soak/soak_chat.py             # 1000 clients, 120 s
    .venv/bin/python tests/soak/soak_chat.py --quick     # 100 clients, 15 s (for CI)

A JSON summary goes to stdout and to ``artifacts/soak_chat.json``. The server is stopped by its
PID (process group) however the run ends.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import websockets

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
FD_SLACK = 16  # listening socket, engine descriptors, logging: whatever the server opens once
FDS_PER_CLIENT = 3  # its socket and its mailbox's readiness descriptor (2 measured), plus one


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _die_with_parent() -> None:
    """In the server, before exec: SIGTERM when this harness dies, even by SIGKILL."""
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG


def _exit_on_signal(signum: int, _frame: object) -> None:
    """SIGTERM (as `timeout` or CI's time limit sends it) unwinds like Ctrl-C, so the `finally`
    that stops the server runs."""
    raise SystemExit(128 + signum)


class Server:
    def __init__(self, port: int) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        ARTIFACTS.mkdir(exist_ok=True)
        self.log = open(ARTIFACTS / "soak_chat_server.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "examples.websocket_chat.app:application",
             "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
             "--backlog", "4096"],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_die_with_parent)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"uvicorn exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("uvicorn did not start within 30 s")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=15)
        self.log.close()


class Client:
    def __init__(self, idx: int, room: str) -> None:
        self.idx = idx
        self.room = room
        self.ws: Any = None
        self.got: dict[str, int] = {}  # message text -> times received
        self.lagged = 0
        self.reader: Optional[asyncio.Task[None]] = None

    async def connect(self, base: str) -> None:
        self.ws = await websockets.connect(f"{base}/ws/{self.room}", open_timeout=30,
                                           max_size=None, ping_interval=None)
        await self.ws.send(json.dumps({"type": "join", "username": f"soak{self.idx}"}))
        while True:
            frame = json.loads(await asyncio.wait_for(self.ws.recv(), 30))
            if frame.get("type") == "joined":
                break
        self.reader = asyncio.create_task(self.read())

    async def read(self) -> None:
        try:
            async for raw in self.ws:
                frame = json.loads(raw)
                kind = frame.get("type")
                if kind == "message":
                    text = frame["data"]["text"]
                    if text.startswith("soak:"):
                        self.got[text] = self.got.get(text, 0) + 1
                elif kind == "lagged":
                    self.lagged += int(frame.get("dropped", 0))
        except websockets.ConnectionClosed:
            pass

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            await asyncio.wait([self.reader], timeout=10)


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    server = Server(port)
    base = f"ws://127.0.0.1:{port}"
    samples: list[dict[str, Any]] = []
    result: dict[str, Any] = {"clients": args.clients, "rooms": args.rooms, "seconds": args.seconds,
                              "rate": args.rate, "samples": samples}
    clients: list[Client] = []
    try:
        fds_start = open_fds(server.pid)
        result["fds_start"] = fds_start
        rooms = [f"soak{r}" for r in range(args.rooms)]
        clients = [Client(i, rooms[i % len(rooms)]) for i in range(args.clients)]
        t0 = time.monotonic()
        for i in range(0, len(clients), 50):  # batches: no accept-queue overflow
            await asyncio.gather(*(c.connect(base) for c in clients[i:i + 50]))
        result["connect_seconds"] = round(time.monotonic() - t0, 2)

        sent: dict[str, list[str]] = {room: [] for room in rooms}
        start = time.monotonic()
        next_sample = start
        seq = 0
        rng = random.Random(1)
        while True:
            now = time.monotonic()
            if now >= next_sample:
                samples.append({"t": round(now - start, 1), "rss_kib": rss_kib(server.pid),
                                "fds": open_fds(server.pid)})
                next_sample += args.sample
            if now - start >= args.seconds:
                break
            # Send this tick's share of the rate, then sleep to the next tick.
            for _ in range(max(1, round(args.rate * 0.1))):
                client = rng.choice(clients)
                text = f"soak:{client.idx}:{seq}"
                seq += 1
                sent[client.room].append(text)
                await client.ws.send(json.dumps({"type": "message", "text": text}))
            await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - now)))
        result["messages_sent"] = seq
        result["deliveries_expected"] = sum(len(sent[c.room]) for c in clients)

        # Drain: wait (bounded) until everyone has everything.
        deadline = time.monotonic() + args.drain
        while time.monotonic() < deadline:
            if all(len(c.got) >= len(sent[c.room]) for c in clients):
                break
            await asyncio.sleep(0.2)
        lost = sum(len(set(sent[c.room]) - set(c.got)) for c in clients)
        dup = sum(n - 1 for c in clients for n in c.got.values() if n > 1)
        result.update(lost=lost, duplicated=dup, lagged=sum(c.lagged for c in clients))
        samples.append({"t": round(time.monotonic() - start, 1), "rss_kib": rss_kib(server.pid),
                        "fds": open_fds(server.pid)})

        for i in range(0, len(clients), 100):
            await asyncio.gather(*(c.close() for c in clients[i:i + 100]))
        clients = []
        fds_end = open_fds(server.pid)
        for _ in range(100):  # the server closes its side shortly after
            if fds_end <= fds_start + FD_SLACK:
                break
            await asyncio.sleep(0.1)
            fds_end = open_fds(server.pid)
        result["fds_end"] = fds_end
    finally:
        for c in clients:
            if c.ws is not None:
                c.ws.transport.abort()
        server.stop()

    warm = [s for s in samples if s["t"] >= args.seconds / 5] or samples
    base_rss, last_rss = warm[0]["rss_kib"], samples[-1]["rss_kib"]
    allowed = base_rss * (1 + args.max_growth_pct / 100) + args.max_growth_mib * 1024
    max_fds = max(s["fds"] for s in samples)
    checks = {
        "no_lost_message": result["lost"] == 0 and result["duplicated"] == 0 and result["lagged"] == 0,
        "rss_flat_after_warmup": last_rss <= allowed,
        "fds_bounded_while_connected":
            max_fds <= result["fds_start"] + FDS_PER_CLIENT * args.clients + FD_SLACK,
        "no_fd_leaked": result["fds_end"] <= result["fds_start"] + FD_SLACK,
    }
    result.update(rss_warm_kib=base_rss, rss_last_kib=last_rss, rss_allowed_kib=int(allowed),
                  max_fds=max_fds,
                  fds_per_client=round((max_fds - result["fds_start"]) / max(1, args.clients), 2),
                  checks=checks, ok=all(checks.values()))
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--rooms", type=int, default=20)
    p.add_argument("--seconds", type=float, default=120)
    p.add_argument("--rate", type=float, default=50, help="messages per second, all clients")
    p.add_argument("--sample", type=float, default=10, help="seconds between RSS/fd samples")
    p.add_argument("--drain", type=float, default=60, help="max seconds to wait for deliveries")
    p.add_argument("--max-growth-pct", type=float, default=10)
    p.add_argument("--max-growth-mib", type=float, default=16)
    p.add_argument("--quick", action="store_true", help="100 clients, 15 s, samples every 5 s")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, _exit_on_signal)
    # Each client costs a descriptor here and two in the server (which inherits this limit).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4 * args.clients + 1024
    if soft < want and (hard == resource.RLIM_INFINITY or hard >= want):
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if args.quick:
        args.clients, args.seconds, args.sample, args.rooms = 100, 15, 5, 5
    result = asyncio.run(asyncio.wait_for(soak(args), args.seconds + args.drain + 600))
    text = json.dumps(result, indent=2)
    print(text)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "soak_chat.json").write_text(text + "\n")
    if not result["ok"]:
        print("soak: FAILED: " + ", ".join(k for k, v in result["checks"].items() if not v),
              file=sys.stderr)
        return 1
    print("soak: ok", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
