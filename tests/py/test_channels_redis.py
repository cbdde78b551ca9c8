"""Channels across processes: two uvicorns sharing one engine through Redis (``HORNBEAM_URL``).

A client on each server joins the same room: each sees the other's presence, gets the other's
messages, and sees the other leave when its connection drops; ``Presence.list()`` answers the same
in both processes. Skipped when ``redis-server`` is not installed or the engine has no Redis
backend yet.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from typing import Any, Iterator

import pytest
from conftest import ARTIFACTS, Server, free_port, require
from test_channels import Client



@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    redis = require("redis-server")
    port = free_port()
    ARTIFACTS.mkdir(exist_ok=True)
    log = open(ARTIFACTS / f"redis-{port}.log", "wb")
    proc = subprocess.Popen([redis, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        url = f"redis://127.0.0.1:{port}/0"
        probe = subprocess.run(
            [sys.executable, "-c", "import hornbeam_erlang as h; h.state_set('probe', 1); print(h.backend())"],
            env=dict(os.environ, HORNBEAM_URL=url), capture_output=True, text=True, timeout=30)
        assert probe.returncode == 0, f"the engine does not open HORNBEAM_URL={url}: {probe.stderr}"
        assert probe.stdout.strip() == "redis", probe.stdout
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
        log.close()


def presence_of(server: Server, topic: str) -> Any:
    with urllib.request.urlopen(f"{server.url}/api/presence/{topic}", timeout=5) as resp:
        return json.loads(resp.read())


def test_two_processes_share_broadcasts_and_presence(redis_url: str) -> None:
    servers = [Server("tests.py.test_channels_app:app", {"HORNBEAM_URL": redis_url}, [])
               for _ in range(2)]
    try:
        async def scenario() -> None:
            topic = f"room:{uuid.uuid4().hex[:10]}"
            a = await Client.connect(servers[0], "hb")
            b = await Client.connect(servers[1], "phx")
            await a.join(topic, {"username": "ada"})
            await a.expect_event(topic, "presence_state")
            await b.join(topic, {"username": "bob"})
            state = (await b.expect_event(topic, "presence_state"))[4]
            assert set(state) == {"user:ada", "user:bob"}
            await a.expect(lambda f: f[3] == "presence_diff" and "user:bob" in f[4]["joins"])
            for srv in servers:
                assert set(presence_of(srv, topic)) == {"user:ada", "user:bob"}

            await b.call(topic, "new_msg", {"body": "across"})
            assert (await a.expect_event(topic, "new_msg"))[4] == {"username": "bob",
                                                                    "body": "across"}
            history = (await a.call(topic, "get_history", {}))[4]["response"]["messages"]
            assert [m["body"] for m in history] == ["across"]

            b.ws.transport.abort()
            await a.expect(lambda f: f[3] == "presence_diff" and "user:bob" in f[4]["leaves"])
            for srv in servers:
                assert set(presence_of(srv, topic)) == {"user:ada"}
            await a.close()

        asyncio.run(asyncio.wait_for(scenario(), 60))
    finally:
        for srv in servers:
            srv.stop()
