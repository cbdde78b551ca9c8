"""Slow consumers in the WebSocket chat (issue 9, load).

100 clients join a room and then never read; 5 clients chat in the same room. The 5 must receive
every message (each within a bounded wait), the server's memory must stay bounded (RSS read from
/proc before and after, with a wide margin), and the non-readers must be dropped by the app's
policy: a connection whose outgoing queue passes `OUTBOX_MAX_CHARS` is dropped (see the app).

The fan-out's two paths are also checked in-process, against a `send` that waits while told to: sent
directly while sends complete at once, queued behind a send that waits, direct again once caught
up, dropped past the bound.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from typing import Any

import httpx
import pytest
import websockets

from examples.websocket_chat import app as chat
from examples.websocket_chat.app import OUTBOX_MAX_CHARS

from hornbeam_erlang import publish
from test_slow_consumers_apps import rss_kib, silent_client as raw_silent_client

ROOM = "slow"
SILENT = 100
TALKERS = 5
PER_TALKER = 400
TEXT = "x" * 1900  # near MAX_TEXT_CHARS, so the silent clients' backlog grows fast
TALKER_WAIT = 30.0  # seconds one message may take to come back (generous: a bound, not a benchmark)


def silent_client(port: int, name: str) -> socket.socket:
    """A raw WebSocket client that handshakes, joins as ``name``, and then never reads again."""
    return raw_silent_client(port, f"/ws/{ROOM}", {"type": "join", "username": name})


async def talker(base: str, name: str, received: dict[str, list[int]], total: int,
                 all_joined: "asyncio.Barrier") -> None:
    """Sends PER_TALKER messages, each after its previous one came back; reads everything.

    Sending starts once every talker is joined (so subscribed): a talker still connecting when
    another's first message is published would miss it and wait for it in vain."""
    async with websockets.connect(f"{base}/ws/{ROOM}", max_size=None, open_timeout=10) as ws:
        await ws.send(json.dumps({"type": "join", "username": name}))
        while json.loads(await asyncio.wait_for(ws.recv(), TALKER_WAIT))["type"] != "joined":
            pass
        await asyncio.wait_for(all_joined.wait(), TALKER_WAIT)
        mine = received[name]
        pending = 0
        sent = 0
        while True:
            if pending == 0 and sent < PER_TALKER:
                await ws.send(json.dumps({"type": "message", "text": f"{name}:{sent}:{TEXT}"}))
                sent += 1
                pending = 1
            if sent == PER_TALKER and pending == 0 and len(mine) >= total:
                break
            frame = json.loads(await asyncio.wait_for(ws.recv(), TALKER_WAIT))
            if frame["type"] == "message":
                sender, seq, _ = frame["data"]["text"].split(":", 2)
                mine.append(hash((sender, int(seq))))
                if sender == name:
                    pending = 0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_silent_clients_do_not_hold_back_the_others_and_are_dropped(serve: Any) -> None:
    server = serve("examples.websocket_chat.app:application")
    pid = server.proc.pid
    fds_at_start = open_fds(pid)
    silent = [silent_client(server.port, f"silent{i}") for i in range(SILENT)]
    try:
        async def scenario() -> None:
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
                async def users() -> int:
                    rooms = (await http.get("/api/rooms")).json()
                    return next((r["users"] for r in rooms if r["id"] == ROOM), 0)

                for _ in range(400):  # the joins travel asynchronously: wait until all counted
                    if await users() == SILENT:
                        break
                    await asyncio.sleep(0.05)
                assert await users() == SILENT
                before = rss_kib(pid)

                total = TALKERS * PER_TALKER
                received: dict[str, list[int]] = {f"talker{i}": [] for i in range(TALKERS)}
                all_joined = asyncio.Barrier(TALKERS)
                await asyncio.gather(*(talker(server.ws_url, name, received, total, all_joined)
                                       for name in received))
                after = rss_kib(pid)

                # Every talker got every message, none twice.
                for name, got in received.items():
                    assert len(got) == total, name
                    assert len(set(got)) == total, name
                # Each silent client was sent total * len(TEXT) characters (about 3.6 MiB), 360 MiB
                # for the hundred; keeping it would show in RSS. The policy keeps at most
                # OUTBOX_MAX_CHARS per client (plus transport buffers) before dropping it.
                backlog_mib = total * len(TEXT) * SILENT / 2**20
                assert OUTBOX_MAX_CHARS * SILENT / 2**20 < backlog_mib / 4
                growth_mib = (after - before) / 1024
                assert growth_mib < backlog_mib / 4, (before, after)

                # The silent ones were dropped: their users left the room (the talkers did too,
                # after closing); the server logged why.
                for _ in range(400):
                    if await users() == 0:
                        break
                    await asyncio.sleep(0.05)
                assert await users() == 0

        asyncio.run(asyncio.wait_for(scenario(), 100))
    finally:
        for sock in silent:
            sock.close()
    assert server.log().count("is not reading") == SILENT
    # No descriptor kept once the silent clients are gone (a few the engine opens on first use,
    # such as the event-loop hub's readiness descriptor, are allowed for).
    for _ in range(200):
        if open_fds(pid) <= fds_at_start + 5:
            break
        time.sleep(0.05)
    assert open_fds(pid) <= fds_at_start + 5


def test_fanout_sends_directly_until_a_send_waits_and_drops_past_the_bound(
        caplog: pytest.LogCaptureFixture) -> None:
    topic = "chat:pump-unit"

    async def scenario() -> None:
        writable = asyncio.Event()
        writable.set()
        sent: list[str] = []
        closes: list[int] = []

        async def send(event: dict[str, Any]) -> None:  # uvicorn's: waits while the buffer is full
            if event["type"] == "websocket.close":
                closes.append(event["code"])
                return
            await writable.wait()
            sent.append(event["text"])

        async def until(cond: Any) -> None:
            for _ in range(2000):
                if cond():
                    return
                await asyncio.sleep(0.001)
            raise AssertionError("timed out")

        conn = chat.Connection(chat.ChatRoom("pump-unit"), send)
        outbox = conn.outbox
        chat.rooms.join(topic, outbox)
        try:
            texts = [json.dumps({"type": "message", "n": i}) for i in range(12)]
            for text in texts[:3]:  # the client keeps up: sent by the room's task, no writer
                publish(topic, text)
            await until(lambda: len(sent) == 3)
            assert not outbox.writing and outbox.queued == 0

            writable.clear()  # the transport is full: the next send waits
            for text in texts[3:6]:
                publish(topic, text)
            await until(lambda: outbox.writing and outbox.waiting == 2)
            assert sent == texts[:3]
            assert outbox.queued == sum(map(len, texts[3:6]))

            writable.set()  # it drains: the writer sends the rest in order and hands back
            await until(lambda: len(sent) == 6)
            await until(lambda: not outbox.writing)
            assert sent == texts[:6] and outbox.queued == 0 and not outbox.waiting
            for text in texts[6:]:
                publish(topic, text)
            await until(lambda: len(sent) == 12)
            assert sent == texts and not outbox.writing

            writable.clear()  # the client stops reading: dropped once past the bound
            big = "x" * 2000
            for i in range(OUTBOX_MAX_CHARS // len(big) + 2):
                publish(topic, json.dumps({"type": "message", "n": i, "text": big}))
            await asyncio.wait_for(outbox.wait_ended(), 10)
            await until(lambda: closes == [chat.CLOSE_TOO_SLOW])
            assert outbox.dropped and not outbox.writing and not outbox.waiting
            assert outbox.queued == 0 and len(sent) == 12
            # Dropped members leave their groups: the room's mailbox and task went with the last.
            assert chat.rooms.members(topic) == [] and chat.rooms.mailbox(topic) is None
        finally:
            chat.rooms.leave_all(outbox)
            outbox.cancel()

    asyncio.run(asyncio.wait_for(scenario(), 30))
    assert "is not reading" in caplog.text
