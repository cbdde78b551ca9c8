"""Bad input on the wire that the per-app suites do not cover (docs/bad-input.md).

Deeply nested JSON (Python's parser raises RecursionError, not ValueError), NaN/Infinity tokens
(Python's parser accepts them, browsers' JSON.parse does not) and text frames that are not UTF-8.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from test_channels import APP as CHANNELS_APP
from test_channels import CONTROL, FAMILIES, Client, run, unique

DEEP = "[" * 20_000 + "]" * 20_000  # 40 KB: under every app's frame limit, far over recursion's


def raw_ws(port: int, path: str, rcvbuf: int | None = None) -> socket.socket:
    """A raw client socket past the WebSocket handshake (to send what no library would); a small
    ``rcvbuf`` keeps the kernel from absorbing a backlog for the server."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)  # byte by byte: nothing past the handshake is read
        assert chunk, "closed during the handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def send_frame(sock: socket.socket, opcode: int, payload: bytes) -> None:
    mask = os.urandom(4)
    assert len(payload) < 126
    sock.sendall(struct.pack("!BB", 0x80 | opcode, 0x80 | len(payload)) + mask
                 + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))


def read_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "connection ended without a close frame"
        data += chunk
    return data


def close_code(sock: socket.socket) -> int:
    """Reads server frames until the close frame; its status code."""
    for _ in range(1000):
        b0, b1 = read_exactly(sock, 2)
        length = b1 & 0x7F
        if length == 126:
            length = struct.unpack("!H", read_exactly(sock, 2))[0]
        elif length == 127:
            length = struct.unpack("!Q", read_exactly(sock, 8))[0]
        payload = read_exactly(sock, length)
        if b0 & 0x0F == 0x8:
            return int(struct.unpack("!H", payload[:2])[0])
    raise AssertionError("no close frame")


INVALID_UTF8 = b'{"type": "\xc3\x28"}'


@pytest.mark.parametrize(("app", "path"), [
    (CHANNELS_APP, "/ws/websocket"),
    ("examples.websocket_chat.app:application", "/ws/general"),
    ("examples.zenith_chat.app:app", "/ws/chat/general"),
])
def test_text_frame_that_is_not_utf8_closes_1007(serve: Any, app: str, path: str) -> None:
    server = serve(app)
    sock = raw_ws(server.port, path)
    try:
        send_frame(sock, 0x1, INVALID_UTF8)
        assert close_code(sock) == 1007
    finally:
        sock.close()
    # The server keeps serving others.
    sock = raw_ws(server.port, path)
    sock.close()


@pytest.mark.parametrize("family", FAMILIES)
def test_channels_deep_nesting_and_nan_are_malformed_frames(serve: Any, family: str) -> None:
    server = serve(CHANNELS_APP)

    async def scenario() -> None:
        c = await Client.connect(server, family)
        topic = unique("test")
        await c.join(topic, {})
        bad = {
            DEEP: "nested too deeply",
            json.dumps([None, "1", topic, "echo", {"x": "NaN"}]).replace('"NaN"', "NaN"): "invalid JSON",
            json.dumps([None, "2", topic, "echo", {"x": 1}]).replace("1}", "Infinity}"): "invalid JSON",
            json.dumps([None, "3", topic, "echo", {"x": 1}]).replace("1}", "-Infinity}"): "invalid JSON",
        }
        for raw, why in bad.items():
            await c.ws.send(raw)
            frame = await c.expect(lambda f: f[3] == f"{family}_error")
            assert frame[2] == CONTROL[family]
            assert frame[4]["reason"].startswith("malformed frame") and why in frame[4]["reason"]
        # None of them reached the handler; the connection still serves.
        assert (await c.call(topic, "echo", {"ok": 1.5}))[4] == {"status": "ok", "response": {"ok": 1.5}}
        await c.close()

    run(scenario())
    assert "Traceback" not in server.log()


def test_websocket_chat_deep_nesting_closes_1007(serve: Any) -> None:
    server = serve("examples.websocket_chat.app:application")

    async def scenario() -> None:
        async with websockets.connect(f"{server.ws_url}/ws/deep", open_timeout=10) as ws:
            await ws.send(DEEP)
            with pytest.raises(ConnectionClosed):
                for _ in range(100):
                    await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == 1007

    asyncio.run(asyncio.wait_for(scenario(), 60))
    assert "Traceback" not in server.log()


def test_zenith_and_velithon_deep_nesting_is_invalid_json(serve: Any) -> None:
    zenith = serve("examples.zenith_chat.app:app")
    velithon = serve("examples.velithon_chat.app:app")

    async def scenario() -> None:
        async with websockets.connect(f"{zenith.ws_url}/ws/chat/general", open_timeout=10) as ws:
            await ws.send(DEEP)
            event = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert (event["type"], event["error"]) == ("error", "invalid_json")
            await ws.send(json.dumps({"type": "join", "username": "after"}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] != "error"
        async with httpx.AsyncClient(base_url=velithon.url) as http:
            tok = (await http.post("/api/token", json={"username": "deep"})).json()["token"]
        async with websockets.connect(f"{velithon.ws_url}/ws/deep/deep?token={tok}",
                                      open_timeout=10) as ws:
            await ws.send(DEEP)
            for _ in range(100):  # history and join notices may come first
                event = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if event.get("message_type") == "error":
                    break
            assert event["error"] == "invalid_json"

    asyncio.run(asyncio.wait_for(scenario(), 60))
    assert "Traceback" not in zenith.log() and "Traceback" not in velithon.log()


def test_guide_errors_section_deep_nesting_closes_1002(serve: Any) -> None:
    server = serve("examples.websocket_guide.errors:application")

    async def scenario() -> None:
        async with websockets.connect(f"{server.ws_url}/ws", open_timeout=10) as ws:
            await ws.send("[" * 2000 + "]" * 2000)  # under the section's 4 KiB frame limit
            with pytest.raises(ConnectionClosed):
                for _ in range(100):
                    await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == 1002

    asyncio.run(asyncio.wait_for(scenario(), 60))
    assert "Traceback" not in server.log()


def test_zenith_and_velithon_refuse_oversized_frames_before_parsing(serve: Any) -> None:
    zenith = serve("examples.zenith_chat.app:app")
    velithon = serve("examples.velithon_chat.app:app")
    huge = json.dumps({"type": "message", "message": "x" * (1024 * 1024), "content": "y"})

    async def scenario() -> None:
        async with websockets.connect(f"{zenith.ws_url}/ws/chat/general", open_timeout=10,
                                      max_size=None) as ws:
            await ws.send(huge)
            event = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert (event["type"], event["error"]) == ("error", "frame_too_large")
            await ws.send(json.dumps({"type": "join", "username": "after"}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] != "error"
        async with httpx.AsyncClient(base_url=velithon.url) as http:
            tok = (await http.post("/api/token", json={"username": "big"})).json()["token"]
        async with websockets.connect(f"{velithon.ws_url}/ws/big/big?token={tok}",
                                      open_timeout=10, max_size=None) as ws:
            await ws.send(huge)
            for _ in range(100):
                event = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if event.get("message_type") == "error":
                    break
            assert event["error"] == "frame_too_large"

    asyncio.run(asyncio.wait_for(scenario(), 60))
