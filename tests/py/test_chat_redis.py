"""The WebSocket chat under ``uvicorn --workers 3`` sharing one Redis (``HORNBEAM_URL``), and
redis-server restarting mid-chat.

Clients land on every worker (checked with ``PUBSUB NUMSUB``: each worker's bus subscribes once);
every client sees every message and the user list is the same whichever worker answers. When
redis-server restarts, each worker's subscription comes back, every socket is told about the gap
(a ``lagged`` frame: the engine's lag notice), and messages flow again between all workers.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from typing import Iterator

import pytest

from test_websocket_chat import APP, Client, room_info, run, wait_room
from conftest import free_port, require


class RedisServer:
    """A private redis-server on a fixed loopback port that can be stopped and started again."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [require("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None

    def numsub(self, channel: str) -> int:
        import redis

        with redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5) as r:
            return int(dict(r.pubsub_numsub(channel)).get(channel.encode(), 0))


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


BUS = "hb:bus:0"  # the engine's channel with the default prefix on database 0


def test_three_workers_chat_and_a_redis_restart_mid_chat(serve, redis_server):
    server = serve(APP, env={"HORNBEAM_URL": redis_server.url}, args=("--workers", "3"))

    async def main() -> None:
        clients: list[Client] = []
        # Connect until every worker holds at least one client (each subscribes once); bounded.
        for i in range(60):
            clients.append(await Client.connect(server.ws_url, "shared", f"u{i}"))
            if len(clients) >= 30 and redis_server.numsub(BUS) == 3:
                break
        assert redis_server.numsub(BUS) == 3, "clients did not reach all three workers"
        n = len(clients)
        names = sorted(c.name for c in clients)
        for _ in range(10):  # each request lands on any worker
            info = await room_info(server.url, "shared")
            assert info["users"] == n
            assert sorted(u["username"] for u in info["user_list"]) == names
        for c in clients[:5]:
            await c.send(type="message", text=f"before from {c.name}")
        for c in clients:
            await c.wait_for(lambda c: len(c.texts()) == 5, timeout=20)

        # redis-server goes away and comes back on the same port (with no data: --save '').
        redis_server.stop()
        time.sleep(0.5)
        redis_server.start()
        # Every worker resubscribes and tells each of its sockets about the gap.
        for c in clients:
            await c.wait_for(lambda c: len(c.of_type("lagged")) >= 1, timeout=20)
        assert redis_server.numsub(BUS) == 3
        for c in clients[-3:]:
            await c.send(type="message", text=f"after from {c.name}")
        for c in clients:
            await c.wait_for(lambda c: len(c.texts()) == 8, timeout=20)
            assert sorted(c.texts()[5:]) == sorted(f"after from {x.name}" for x in clients[-3:])
        for c in clients:
            await c.close()
        # The data written before the restart went with it (no persistence here); a user joining
        # now is listed again by every worker.
        late = await Client.connect(server.ws_url, "shared", "late")
        info = await wait_room(server.url, "shared", lambda i: [u["username"] for u in i["user_list"]] == ["late"])
        assert info["user_list"][0]["username"] == "late"
        await late.close()

    run(main(), timeout=150)
    assert "Traceback" not in server.log(), server.log()[-3000:]
