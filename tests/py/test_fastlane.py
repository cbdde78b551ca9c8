"""The broadcast fastlane (`hornbeam_channels._fastlane`): a frame encoded once and written to
each connection's transport under uvicorn, byte for byte what the WebSocket library would send,
taken only where it is safe (no compression negotiated, uvicorn's own protocol, a transport that
accepts data) and never at the cost of the slow-consumer rule."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode

from hornbeam_channels._fastlane import Wire, text_frame

APP = "tests.py.fastlane_app:application"
SIZES = [0, 1, 125, 126, 127, 1000, 65535, 65536, 70000]


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


@pytest.mark.parametrize("n", SIZES)
def test_frames_are_what_the_websocket_library_writes(n: int) -> None:
    text = ("é" * n)[:n] if n % 2 else "a" * n
    want = Frame(Opcode.TEXT, text.encode()).serialize(mask=False, extensions=[])
    assert text_frame(text) == want
    wire = Wire(text)
    assert wire.frame() is wire.frame(), "made once"


async def lane(ws: Any) -> bool:
    await ws.send("?lane")
    return bool(json.loads(await asyncio.wait_for(ws.recv(), 10))["fastlane"])


def payloads() -> list[str]:
    # Sizes across every length encoding, multi-byte characters included.
    return [f"{n}:" + ("ü" if n % 2 else "k") * n for n in SIZES]


async def exchange(url: str, **connect: Any) -> bool:
    async with websockets.connect(url, max_size=None, **connect) as a, \
            websockets.connect(url, max_size=None, **connect) as b:
        on_lane = await lane(a)
        sent = payloads()
        for text in sent:
            await a.send(text)
        for ws in (a, b):
            got = [await asyncio.wait_for(ws.recv(), 10) for _ in sent]
            assert got == sent
        return on_lane


def test_uncompressed_connections_take_the_fastlane_and_get_every_frame_intact(serve) -> None:
    server = serve(APP)
    assert run(exchange(f"{server.ws_url}/ws", compression=None)) is True


def test_compressed_connections_get_small_frames_plain_and_large_ones_compressed(serve) -> None:
    # The websockets client offers permessage-deflate by default, as browsers do.
    server = serve(APP)
    assert run(exchange(f"{server.ws_url}/ws")) is True

    async def main() -> None:
        # A raw client that negotiates permessage-deflate and shows each frame's RSV1 bit.
        raw = socket.create_connection(("127.0.0.1", server.port))
        raw.sendall(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    b"Sec-WebSocket-Version: 13\r\n"
                    b"Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += raw.recv(1)
        assert b"permessage-deflate" in head, head
        raw.settimeout(10)
        buf = bytearray()

        def read_frame() -> tuple[bool, bytes]:
            def need(n: int) -> None:
                while len(buf) < n:
                    chunk = raw.recv(1 << 16)
                    assert chunk, "connection ended"
                    buf.extend(chunk)
            need(2)
            rsv1, n, at = bool(buf[0] & 0x40), buf[1] & 0x7F, 2
            if n == 126:
                need(4)
                n, at = int.from_bytes(buf[2:4], "big"), 4
            elif n == 127:
                need(10)
                n, at = int.from_bytes(buf[2:10], "big"), 10
            need(at + n)
            payload = bytes(buf[at:at + n])
            del buf[:at + n]
            return rsv1, payload

        small, large = "small " * 10, "large " * 1000
        try:
            async with websockets.connect(f"{server.ws_url}/ws") as talker:
                await talker.send(small)
                await talker.send(large)
                assert await asyncio.wait_for(talker.recv(), 10) == small
                assert await asyncio.wait_for(talker.recv(), 10) == large
            got_small, got_large = read_frame(), read_frame()
            assert got_small == (False, small.encode()), "under 1 KiB: plain, from the lane"
            assert got_large[0] is True and len(got_large[1]) < len(large), "compressed"
        finally:
            raw.close()

    run(main())


def test_other_websocket_implementations_have_no_lane(serve) -> None:
    server = serve(APP, args=("--ws", "websockets"))
    assert run(exchange(f"{server.ws_url}/ws", compression=None)) is False


def test_a_client_that_never_reads_is_dropped_while_readers_get_everything(serve) -> None:
    server = serve(APP)

    async def main() -> None:
        # A raw client that completes the handshake (no extensions) and never reads again.
        silent = socket.socket()
        silent.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        silent.connect(("127.0.0.1", server.port))
        silent.sendall(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                       b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                       b"Sec-WebSocket-Version: 13\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += silent.recv(1)
        assert b" 101 " in head.split(b"\r\n")[0]
        try:
            async with websockets.connect(f"{server.ws_url}/ws", compression=None,
                                          max_size=None) as reader:
                assert await lane(reader) is True
                n = 2500  # 10 MB: twice the silent client's socket buffers (the server's send
                # buffer may grow to 4 MB) and its outbox bound
                await reader.send(f"stall {n}")
                got = [await asyncio.wait_for(reader.recv(), 10) for _ in range(n)]
                assert [g[:8] for g in got] == [f"{i:08d}" for i in range(n)]
                # The silent one was dropped (its close 1008 cannot pass what it does not read):
                # what it was sent stops at its socket buffers and its outbox bound.
                assert server.log().count("is not reading") == 1, server.log()
                silent.settimeout(2)
                data = b""
                while True:
                    try:
                        chunk = silent.recv(1 << 16)
                    except socket.timeout:
                        break
                    if not chunk:
                        break
                    data += chunk
                assert 0 < len(data) < n * 4096 // 2, len(data)
                await reader.send("still here")
                assert await asyncio.wait_for(reader.recv(), 10) == "still here"
        finally:
            silent.close()

    run(main())
