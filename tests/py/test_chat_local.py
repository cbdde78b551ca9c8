"""The seed chat (`workers => 4`) under `uvicorn --workers 4` on `HORNBEAM_URL=local://DIR`: one
chat across the workers, no server. Every client gets every message whichever worker holds its
connection; user lists and history agree; a worker killed with SIGKILL leaves the others
delivering."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from test_websocket_chat import APP, Client, room_info, run

WORKERS = 4


def worker_pids(master: int) -> list[int]:
    """uvicorn's worker processes (children of the master running its app, not helpers)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == master and b"spawn_main" in cmd and b"resource_tracker" not in cmd:
            pids.append(int(entry.name))
    return pids


def connections_by_pid(port: int, pids: list[int]) -> dict[int, int]:
    """How many established TCP connections to `port` each process holds (from /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if int(f[1].rsplit(":", 1)[1], 16) == port and f[3] == "01":
                inodes.add(f[9])
    counts = {}
    for pid in pids:
        n = 0
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in inodes:
                n += 1
        counts[pid] = n
    return counts


def test_four_workers_share_one_chat_on_local(serve, tmp_path):
    server = serve(APP, env={"HORNBEAM_URL": f"local://{tmp_path}"}, args=("--workers", str(WORKERS)))
    n = 40

    async def connect_spread() -> tuple[str, list[Client], list[int]]:
        """`n` clients of one room, connected at once, held by at least two workers: an idle
        uvicorn may hand a burst of sequential connects to one worker, so a room whose clients
        all landed on one is closed and a fresh room tried (at most 5 times)."""
        pids = worker_pids(server.proc.pid)
        assert len(pids) == WORKERS, pids
        held: dict[int, int] = {}
        for attempt in range(5):
            room = f"shared{attempt}"
            clients = list(await asyncio.gather(
                *(Client.connect(server.ws_url, room, f"w{i}") for i in range(n))))
            held = connections_by_pid(server.port, pids)
            assert sum(held.values()) == n, held
            if sum(1 for c in held.values() if c) >= 2:
                return room, clients, pids
            for c in clients:
                await c.close()
            for _ in range(50):  # bounded: up to 5 s for the server side to close them too
                if sum(connections_by_pid(server.port, pids).values()) == 0:
                    break
                await asyncio.sleep(0.1)
        raise AssertionError(f"connections never spread over workers: {held}")

    async def main() -> None:
        room, clients, pids = await connect_spread()
        try:
            await chat(room, clients, pids)
        finally:
            for c in clients:
                await c.close()

    async def chat(room: str, clients: list[Client], pids: list[int]) -> None:
        # Each request lands on any worker; every one sees every user.
        for _ in range(10):
            info = await room_info(server.url, room)
            assert info["users"] == n and len(info["user_list"]) == n
        for c in clients[:5]:
            await c.send(type="message", text=f"from {c.name}")
        want = [f"from w{i}" for i in range(5)]
        for c in clients:
            await c.wait_for(lambda c: len(c.texts()) == 5)
            assert sorted(c.texts()) == sorted(want)
        # The history (kept in the shared store) agrees, from whichever worker answers.
        for _ in range(5):
            info = await room_info(server.url, room)
            assert sorted(m["text"] for m in info["recent_messages"]) == sorted(want), info

        # SIGKILL the worker holding the most connections: its clients lose their connections,
        # the others keep chatting through the other workers.
        held = connections_by_pid(server.port, pids)
        victim = max(held, key=lambda p: held[p])
        lost = held[victim]
        os.kill(victim, signal.SIGKILL)
        for _ in range(200):  # bounded: up to 20 s for the closes to arrive
            if sum(1 for c in clients if c._reader is not None and c._reader.done()) >= lost:
                break
            await asyncio.sleep(0.1)
        alive = [c for c in clients if c._reader is not None and not c._reader.done()]
        assert len(alive) == n - lost, (len(alive), n, lost)
        await alive[0].send(type="message", text="after the kill")
        for c in alive:
            await c.wait_for(lambda c: "after the kill" in c.texts())

    run(main(), timeout=120)
