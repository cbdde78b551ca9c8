"""Slow consumers in the other apps that push to WebSocket clients (issue 9, hardening).

The Zenith and Velithon chats, the guide's pub/sub chat and its live dashboard all write their
sockets through the channels layer's `hornbeam_channels.Outbox`. For
each app, on a real uvicorn: silent raw-socket clients
(small ``SO_RCVBUF``, never read after the handshake) share the app with clients that read. The
readers get every message (the chats) or keep getting fresh snapshots (the dashboard); every silent
client is dropped by the policy (the server logs it, the app forgets its user, and the server
closes its socket: reading it now ends in EOF); the server's RSS stays far below what keeping the
silent clients' backlog would cost.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import httpx
import pytest
import websockets

from hornbeam_channels.outbox import DEFAULT_MAX_CHARS as OUTBOX_MAX_CHARS
from test_bad_input_wire import raw_ws

SILENT = 10
TALKERS = 3
# Each silent client is sent TALKERS * PER_TALKER * len(TEXT) = 9 MiB: well past what the kernel
# may buffer for one socket (net.ipv4.tcp_wmem allows up to 4 MiB) plus the outbox's bound.
PER_TALKER = 1600
WINDOW = 16  # messages a talker may have in flight (sent, not yet back)
TEXT = "x" * 1900  # near every chat's message limit, so the silent backlog grows fast
WAIT = 30.0  # seconds one frame may take (a bound against hanging, not a benchmark)
DROPPED = "is not reading"  # what the outbox logs for each client it drops
SECRET = "slow-consumer-secret-0123456789"


@dataclass
class AppSpec:
    """How to talk to one app: its module, its socket paths and its frame formats."""

    app: str
    ws_path: Callable[[str, str], str]  # (room, username) -> path (velithon adds a token later)
    join: Callable[[str], Optional[dict[str, Any]]]  # username -> first frame, or None
    message: Callable[[str], dict[str, Any]]  # text -> chat frame
    text_of: Callable[[dict[str, Any]], Optional[str]]  # received frame -> chat text, or None
    env: dict[str, str] = field(default_factory=dict)
    token: bool = False


CHATS = {
    "zenith": AppSpec(
        app="examples.zenith_chat.app:app",
        ws_path=lambda room, user: f"/ws/chat/{room}",
        join=lambda user: {"type": "join", "username": user},
        message=lambda text: {"type": "message", "message": text},
        text_of=lambda f: f["message"] if f.get("type") == "message" else None,
    ),
    "velithon": AppSpec(
        app="examples.velithon_chat.app:app",
        ws_path=lambda room, user: f"/ws/{room}/{user}",
        join=lambda user: None,
        message=lambda text: {"type": "message", "content": text},
        text_of=lambda f: f["content"] if f.get("message_type") == "message" else None,
        env={"VELITHON_SECRET": SECRET, "VELITHON_RATE_LIMIT": "1000000"},
        token=True,
    ),
    "guide_pubsub": AppSpec(
        app="examples.websocket_guide.pubsub_chat:application",
        ws_path=lambda room, user: f"/chat/{room}",
        join=lambda user: None,
        message=lambda text: {"user": "talker", "text": text},
        text_of=lambda f: f["text"] if f.get("type") == "message" else None,
    ),
}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def ws_frame(payload: bytes) -> bytes:
    """A masked client text frame."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    if len(payload) < 126:
        head = struct.pack("!BB", 0x81, 0x80 | len(payload))
    else:
        head = struct.pack("!BBH", 0x81, 0x80 | 126, len(payload))
    return head + mask + masked


def silent_client(port: int, path: str, first: Optional[dict[str, Any]]) -> socket.socket:
    """Handshakes, sends ``first`` (if any), and never reads again; a small receive buffer keeps
    the kernel from absorbing the backlog for the server."""
    sock = raw_ws(port, path, rcvbuf=4096)
    if first is not None:
        sock.sendall(ws_frame(json.dumps(first).encode()))
    return sock


def read_to_eof(sock: socket.socket) -> None:
    """Reads what the server left for a dropped client; it must end the connection (EOF)."""
    sock.settimeout(WAIT)
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return
        if not chunk:
            return


def wait_until(check: Callable[[], bool], what: str) -> None:
    for _ in range(600):
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


def fd_report(pid: int) -> str:
    fd_dir = Path(f"/proc/{pid}/fd")
    return " ".join(sorted(os.readlink(fd_dir / n) for n in os.listdir(fd_dir)))


async def await_until(check: Callable[[], bool], what: str) -> None:
    for _ in range(1200):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


def finish(server: Any, silent: list[socket.socket], fds_at_start: int) -> None:
    """Every silent client was dropped by the policy and its socket is closed by the server."""
    wait_until(lambda: server.log().count(DROPPED) >= len(silent), f"{len(silent)} clients dropped")
    assert server.log().count(DROPPED) == len(silent)
    assert "Traceback" not in server.log()
    for sock in silent:
        read_to_eof(sock)
        sock.close()
    pid = server.proc.pid
    fd_dir = Path(f"/proc/{pid}/fd")
    for _ in range(600):
        if len(os.listdir(fd_dir)) <= fds_at_start + 5:
            return
        time.sleep(0.05)
    raise AssertionError(f"descriptors not released ({fds_at_start} at start): {fd_report(pid)}")


@pytest.mark.parametrize("name", sorted(CHATS))
def test_silent_clients_are_dropped_and_talkers_get_everything(serve: Any, tmp_path: Path, name: str) -> None:
    spec = CHATS[name]
    env = dict(spec.env)
    if name == "velithon":
        env["VELITHON_HISTORY_FILE"] = str(tmp_path / "history.jsonl")
    server = serve(spec.app, env=env)
    pid = server.proc.pid
    room = f"slow-{uuid.uuid4().hex[:8]}"
    fds_at_start = len(os.listdir(f"/proc/{pid}/fd"))

    with httpx.Client(base_url=server.url, timeout=10) as http:
        def path_for(user: str) -> str:
            path = spec.ws_path(room, user)
            if spec.token:
                path += "?token=" + http.post("/api/token", json={"username": user}).json()["token"]
            return path

        silent = [silent_client(server.port, path_for(f"silent{i}"), spec.join(f"silent{i}"))
                  for i in range(SILENT)]
        talker_paths = {f"talker{i}": path_for(f"talker{i}") for i in range(TALKERS)}
        bearer = {"Authorization": "Bearer " + http.post(
            "/api/token", json={"username": "observer"}).json()["token"]} if spec.token else {}

        def users() -> Optional[int]:
            """Users the app lists in the room (None for an app that lists none)."""
            if name == "zenith":
                r = http.get(f"/api/rooms/{room}")
                return r.json()["user_count"] if r.status_code == 200 else 0
            if name == "velithon":
                return len(http.get(f"/api/rooms/{room}/users", headers=bearer).json()["users"])
            return None

        if users() is not None:  # the joins travel asynchronously: wait until all counted
            wait_until(lambda: users() == SILENT, "silent clients joined")

    try:
        async def scenario() -> None:
            total = TALKERS * PER_TALKER
            received: dict[str, set[str]] = {n: set() for n in talker_paths}
            connected: list[Any] = []
            for user, path in talker_paths.items():
                ws = await websockets.connect(server.ws_url + path, max_size=None, open_timeout=10)
                connected.append((user, ws))
                first = spec.join(user)
                if first is not None:
                    await ws.send(json.dumps(first))
            # Each talker's own hello coming back shows it is subscribed: only then do the
            # counted messages start, so every talker can receive every one of them.
            for user, ws in connected:
                await ws.send(json.dumps(spec.message(f"hello {user}")))
                while spec.text_of(json.loads(await asyncio.wait_for(ws.recv(), WAIT))) != f"hello {user}":
                    pass
            before = rss_kib(pid)

            async def talk(user: str, ws: Any) -> None:
                mine = received[user]
                sent = back = 0
                while True:
                    while sent - back < WINDOW and sent < PER_TALKER:
                        await ws.send(json.dumps(spec.message(f"{user}:{sent}:{TEXT}")))
                        sent += 1
                    if back == PER_TALKER and len(mine) >= total:
                        return
                    text = spec.text_of(json.loads(await asyncio.wait_for(ws.recv(), WAIT)))
                    if text is None or text.startswith("hello"):
                        continue
                    sender, seq, _ = text.split(":", 2)
                    assert f"{sender}:{seq}" not in mine, "a message came twice"
                    mine.add(f"{sender}:{seq}")
                    if sender == user:
                        back += 1

            await asyncio.gather(*(talk(user, ws) for user, ws in connected))
            after = rss_kib(pid)
            for user, ws in connected:
                await ws.close()

            # Every talker got every message of every talker.
            everything = {f"talker{t}:{i}" for t in range(TALKERS) for i in range(PER_TALKER)}
            for user, got in received.items():
                assert got == everything, user
            # Each silent client was sent total * len(TEXT) characters; keeping that for all of
            # them would show in RSS. The policy keeps at most OUTBOX_MAX_CHARS per client (plus
            # transport buffers) before dropping it.
            backlog_mib = total * len(TEXT) * SILENT / 2**20
            assert OUTBOX_MAX_CHARS * SILENT / 2**20 < backlog_mib / 4
            assert (after - before) / 1024 < backlog_mib / 4, (before, after)

        asyncio.run(asyncio.wait_for(scenario(), 120))
        finish(server, silent, fds_at_start)
        if name in ("zenith", "velithon"):
            with httpx.Client(base_url=server.url, timeout=10) as http:
                # The dropped users left the room (the talkers too, after closing).
                wait_until(lambda: users() == 0, "every user gone from the room")
    finally:
        for sock in silent:
            sock.close()


def test_silent_dashboards_are_dropped_and_readers_keep_getting_snapshots(serve: Any) -> None:
    # Snapshots every 0.3 ms (instead of every second; a reader in this process keeps up with that),
    # so the silent backlog builds quickly.
    server = serve("examples.websocket_guide.dashboard:application",
                   env={"HORNBEAM_DASHBOARD_INTERVAL": "0.0003"})
    pid = server.proc.pid
    fds_at_start = len(os.listdir(f"/proc/{pid}/fd"))
    # Fewer than the chats: the server's CPU is shared by every push loop, and each silent one
    # must be pushed past the kernel's socket buffer (up to 4 MiB) before its outbox fills.
    readers, silent_count = 2, 3

    async def scenario() -> list[socket.socket]:
        connections = [await websockets.connect(server.ws_url + "/ws", open_timeout=10)
                       for _ in range(readers)]
        for ws in connections:
            json.loads(await asyncio.wait_for(ws.recv(), WAIT))
        before = rss_kib(pid)
        silent = [silent_client(server.port, "/ws", None) for _ in range(silent_count)]
        counts = [0] * readers
        done = asyncio.Event()

        async def read(i: int, ws: Any) -> None:
            last = 0.0
            while not done.is_set():
                snapshot = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
                assert snapshot["time"] >= last
                last = snapshot["time"]
                counts[i] += 1

        async def watch() -> None:
            await await_until(lambda: server.log().count(DROPPED) >= silent_count,
                              f"{silent_count} dashboards dropped")
            # The readers go on receiving once every silent one is gone.
            at_drop = list(counts)
            await await_until(lambda: all(c > a + 100 for c, a in zip(counts, at_drop)),
                              "readers served after the drops")
            done.set()

        await asyncio.gather(watch(), *(read(i, ws) for i, ws in enumerate(connections)))
        after = rss_kib(pid)
        for ws in connections:
            await ws.close()
        # Each silent dashboard costs at most its outbox (16 Ki characters) and transport buffers.
        assert (after - before) / 1024 < 32, (before, after)
        return silent

    silent = asyncio.run(asyncio.wait_for(scenario(), 120))
    try:
        finish(server, silent, fds_at_start)
    finally:
        for sock in silent:
            sock.close()
