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

    async def main() -> None:
        clients = [await Client.connect(server.ws_url, "shared", f"w{i}") for i in range(n)]
        pids = worker_pids(server.proc.pid)
        assert len(pids) == WORKERS, pids
        held = connections_by_pid(server.port, pids)
        assert sum(held.values()) == n, held
        assert sum(1 for c in held.values() if c) >= 2, f"connections spread over workers: {held}"
        # Each request lands on any worker; every one sees every user.
        for _ in range(10):
            info = await room_info(server.url, "shared")
            assert info["users"] == n and len(info["user_list"]) == n
        for c in clients[:5]:
            await c.send(type="message", text=f"from {c.name}")
        want = [f"from w{i}" for i in range(5)]
        for c in clients:
            await c.wait_for(lambda c: len(c.texts()) == 5)
            assert sorted(c.texts()) == sorted(want)
        # The history (kept in the shared store) agrees, from whichever worker answers.
        for _ in range(5):
            info = await room_info(server.url, "shared")
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
        for c in alive:
            await c.close()

    run(main(), timeout=120)
