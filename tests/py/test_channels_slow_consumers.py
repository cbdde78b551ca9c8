"""Slow consumers on the channels endpoint: clients that stop reading are dropped by policy.

On a real uvicorn serving ``tests/py/test_channels_app.py`` (default ``max_outbox_chars``, 256 Ki
characters): silent raw-socket clients (small ``SO_RCVBUF``, never read after the handshake) join
a topic with a presence, then talker clients shout large frames to that topic. The talkers get
every broadcast; every silent client is dropped by the outbox (one warning each in the server's
log, its socket closed by the server: reading it ends in EOF), its presence is gone from the
topic, and the server's RSS stays far below what keeping the silent clients' backlog would cost.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import uuid
from typing import Any

import httpx
import pytest
from test_channels import APP, Client
from test_slow_consumers_apps import (
    WAIT,
    await_until,
    finish,
    rss_kib,
    silent_client,
    wait_until,
)

from hornbeam_channels import asgi_endpoint
from hornbeam_channels.outbox import DEFAULT_MAX_CHARS

SILENT = 12
TALKERS = 3
# Each silent client is sent TALKERS * PER_TALKER frames of about len(TEXT) characters: 9.4 MiB,
# well past what the kernel may buffer for one socket (net.ipv4.tcp_wmem allows up to 4 MiB) plus
# the outbox's bound.
PER_TALKER = 820
WINDOW = 16  # shouts a talker may have in flight (sent, not yet back)
TEXT = "x" * 4000
DROPPED = "is not reading"  # what the outbox logs for each connection it drops


def presence(http: httpx.Client, topic: str) -> set[str]:
    return set(http.get(f"/api/presence/{topic}").json())


def test_silent_channel_clients_are_dropped_and_talkers_get_every_broadcast(serve: Any) -> None:
    server = serve(APP)
    pid = server.proc.pid
    topic = f"test:slow{uuid.uuid4().hex[:8]}"
    fds_at_start = len(os.listdir(f"/proc/{pid}/fd"))
    silent_names = {f"silent{i}" for i in range(SILENT)}
    talker_names = {f"talker{i}" for i in range(TALKERS)}
    silent: list[socket.socket] = []
    try:
        for name in sorted(silent_names):
            silent.append(silent_client(server.port, "/ws/websocket?vsn=2.0.0",
                                        ["1", "1", topic, "phx_join", {"name": name}]))  # type: ignore[arg-type]
        with httpx.Client(base_url=server.url, timeout=10) as http:
            # The joins travel asynchronously: wait until every silent client is present.
            wait_until(lambda: presence(http, topic) == silent_names, "silent clients joined")

            async def scenario() -> None:
                total = TALKERS * PER_TALKER
                talkers = []
                for i in range(TALKERS):
                    c = await Client.connect(server, "phx")
                    reply = await c.join(topic, {"name": f"talker{i}"})
                    assert reply[4]["status"] == "ok", reply
                    talkers.append((f"talker{i}", c))
                before = rss_kib(pid)
                received: dict[str, set[str]] = {name: set() for name in talker_names}

                async def talk(name: str, c: Client) -> None:
                    mine = received[name]
                    sent = back = 0
                    while True:
                        while sent - back < WINDOW and sent < PER_TALKER:
                            await c.push(topic, "shout", {"from": name, "seq": sent, "text": TEXT})
                            sent += 1
                        if back == PER_TALKER and len(mine) >= total:
                            return
                        frame = json.loads(await asyncio.wait_for(c.ws.recv(), WAIT))
                        if frame[2] != topic or frame[3] != "shout":
                            continue  # presence diffs (the drops show up as leaves)
                        payload = frame[4]
                        assert payload["text"] == TEXT
                        key = f"{payload['from']}:{payload['seq']}"
                        assert key not in mine, "a broadcast came twice"
                        mine.add(key)
                        if payload["from"] == name:
                            back += 1

                await asyncio.gather(*(talk(name, c) for name, c in talkers))
                after = rss_kib(pid)

                # Every talker got every broadcast of every talker.
                everything = {f"talker{t}:{i}" for t in range(TALKERS) for i in range(PER_TALKER)}
                for name, got in received.items():
                    assert got == everything, name
                # Each silent client was sent total * len(TEXT) characters; keeping that for all
                # of them would show in RSS. The outbox keeps at most DEFAULT_MAX_CHARS per client
                # (plus the transport's buffers) before dropping it.
                backlog_mib = total * len(TEXT) * SILENT / 2**20
                assert DEFAULT_MAX_CHARS * SILENT / 2**20 < backlog_mib / 4
                assert (after - before) / 1024 < backlog_mib / 4, (before, after)

                # The dropped clients' presences are gone; the talkers are still listed.
                await await_until(lambda: server.log().count(DROPPED) >= SILENT,
                                  f"{SILENT} clients dropped")
                await await_until(lambda: presence(http, topic) == talker_names,
                                  "only the talkers present")
                # The talkers are still served after the drops.
                for name, c in talkers:
                    reply = await c.call(topic, "echo", {"still": name})
                    assert reply[4] == {"status": "ok", "response": {"still": name}}
                for _, c in talkers:
                    await c.close()

            asyncio.run(asyncio.wait_for(scenario(), 120))
            # One warning per silent client, none for a talker; the server closed every silent
            # socket (EOF once read) and released its descriptors.
            finish(server, silent, fds_at_start)
            wait_until(lambda: presence(http, topic) == set(), "every presence gone")
    finally:
        for sock in silent:
            sock.close()


def test_max_outbox_chars_option_is_checked() -> None:
    for bad in (0, -1, 1.5, "1024", True):
        with pytest.raises(ValueError, match="max_outbox_chars"):
            asgi_endpoint("/ws", max_outbox_chars=bad)  # type: ignore[arg-type]
    assert asgi_endpoint("/ws").options.max_outbox_chars == DEFAULT_MAX_CHARS == 256 * 1024
    assert asgi_endpoint("/ws", max_outbox_chars=None).options.max_outbox_chars is None
    assert asgi_endpoint("/ws", max_outbox_chars=4096).options.max_outbox_chars == 4096
