"""The WebSocket guide's apps (examples/websocket_guide), each on a real uvicorn with real clients."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import time
from typing import Any, Awaitable, Callable, TypeVar

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

PKG = "examples.websocket_guide"
T = TypeVar("T")


def run(coro: Awaitable[T], timeout: float = 60) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))  # type: ignore[arg-type]


async def recv(ws: Any, timeout: float = 10) -> Any:
    return await asyncio.wait_for(ws.recv(), timeout)


async def close_code_after(ws: Any, payload: Any = None, timeout: float = 10) -> tuple[int | None, str | None]:
    """Send `payload` (if any), read until the server closes, and return its close code and reason."""
    if payload is not None:
        await ws.send(payload)
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except ConnectionClosed:
        pass
    return ws.close_code, ws.close_reason


async def get_json(url: str) -> Any:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(url)
        response.raise_for_status()
        return response.json()


async def poll_json(url: str, predicate: Callable[[Any], bool], timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        data = await get_json(url)
        if predicate(data):
            return data
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} never reached the expected state: {data}")
        await asyncio.sleep(0.1)


def test_echo(serve):
    server = serve(f"{PKG}.echo:application")

    async def main() -> None:
        async with websockets.connect(f"{server.ws_url}/ws") as ws:
            for text in ("Hello!", "", "ünïcødé ✓"):
                await ws.send(text)
                assert await recv(ws) == f"Echo: {text}"
            await ws.send(b"\x00\x01\x02")
            assert await recv(ws) == b"\x00\x01\x02"

    run(main())
    assert "Echo" in httpx.get(server.url + "/", timeout=10).text


def test_binary_frames(serve):
    server = serve(f"{PKG}.binary:application")

    async def main() -> None:
        async with websockets.connect(f"{server.ws_url}/ws", max_size=None) as ws:
            for data in (b"", bytes(range(256)), b"\xff" * 100_000):
                await ws.send(data)
                reply = await recv(ws)
                assert isinstance(reply, bytes)
                assert reply == hashlib.sha256(data).digest()
            await ws.send("text stays text")
            assert await recv(ws) == "text stays text"
        async with websockets.connect(f"{server.ws_url}/ws", max_size=None) as ws:
            code, _ = await close_code_after(ws, b"\x00" * (1024 * 1024 + 1))
            assert code == 1009

    run(main())


def test_subprotocol_choice(serve):
    server = serve(f"{PKG}.subprotocols:application")
    url = f"{server.ws_url}/ws"

    async def main() -> None:
        async with websockets.connect(url, subprotocols=["json", "graphql-ws"]) as ws:
            assert ws.subprotocol == "graphql-ws"
            await ws.send(json.dumps({"type": "connection_init"}))
            assert json.loads(await recv(ws)) == {"type": "connection_ack"}
            await ws.send(json.dumps({"type": "start", "id": "1", "payload": {"query": "{ hello time }"}}))
            data = json.loads(await recv(ws))
            assert data["type"] == "data" and data["id"] == "1"
            assert data["payload"]["data"]["hello"] == "world"
            assert abs(data["payload"]["data"]["time"] - time.time()) < 60
            assert json.loads(await recv(ws)) == {"type": "complete", "id": "1"}
            await ws.send(json.dumps({"type": "start", "id": "2", "payload": {"query": "{ secrets }"}}))
            data = json.loads(await recv(ws))
            assert data["payload"]["errors"][0]["message"] == "unknown field 'secrets'"
            assert json.loads(await recv(ws))["type"] == "complete"
            code, _ = await close_code_after(ws, json.dumps({"type": "connection_terminate"}))
            assert code == 1000

        async with websockets.connect(url, subprotocols=["graphql-ws"]) as ws:
            code, reason = await close_code_after(ws, json.dumps({"type": "start", "id": "1", "payload": {}}))
            assert (code, reason) == (4400, "connection_init expected")

        async with websockets.connect(url, subprotocols=["xml", "json"]) as ws:
            assert ws.subprotocol == "json"
            await ws.send(json.dumps({"numbers": [1, 2, 3]}))
            assert json.loads(await recv(ws)) == {"protocol": "json", "received": {"numbers": [1, 2, 3]}}
            await ws.send("{broken")
            assert json.loads(await recv(ws)) == {"protocol": "json", "error": "invalid JSON"}

        async with websockets.connect(url) as ws:
            assert ws.subprotocol is None
            await ws.send("plain")
            assert await recv(ws) == "Echo: plain"

    run(main())


def test_connection_tracking_is_exact(serve):
    server = serve(f"{PKG}.tracking:application")
    n = 60

    async def main() -> None:
        sockets = await asyncio.gather(*(websockets.connect(f"{server.ws_url}/ws/{i}") for i in range(n)))
        report = await get_json(f"{server.url}/connections")
        assert report["active"] == n
        assert len(report["clients"]) == n
        assert sorted(c["path"] for c in report["clients"]) == sorted(f"/ws/{i}" for i in range(n))

        await sockets[0].send("who")
        reply = json.loads(await recv(sockets[0]))
        assert reply["active"] == n
        assert reply["client_id"] in {c["id"] for c in report["clients"]}

        # Half close cleanly, half vanish without a close frame.
        for i, ws in enumerate(sockets):
            if i % 2:
                ws.transport.abort()
        await asyncio.gather(*(ws.close() for i, ws in enumerate(sockets) if not i % 2))
        await poll_json(f"{server.url}/connections", lambda r: r == {"active": 0, "clients": []})

        # And again, concurrently connecting and leaving.
        async def flap(i: int) -> None:
            async with websockets.connect(f"{server.ws_url}/ws") as ws:
                await ws.send("x")
                await recv(ws)

        await asyncio.gather(*(flap(i) for i in range(n)))
        await poll_json(f"{server.url}/connections", lambda r: r == {"active": 0, "clients": []})

    run(main())


def test_dashboard_pushes_store_metrics_every_second(serve):
    server = serve(f"{PKG}.dashboard:application")

    async def main() -> None:
        async with websockets.connect(f"{server.ws_url}/ws") as ws:
            first = json.loads(await recv(ws))
            assert set(first) >= {"requests", "errors", "latency_p99", "active_connections", "time"}
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
                for _ in range(5):
                    assert (await http.get("/work")).status_code == 200
                assert (await http.get("/fail")).status_code == 500
            pushes = [first]
            while pushes[-1]["requests"] < first["requests"] + 6:
                assert len(pushes) < 10, pushes
                pushes.append(json.loads(await recv(ws, timeout=5)))
            last = pushes[-1]
            assert last["errors"] == first["errors"] + 1
            assert last["latency_p99"] > 0
            for _ in range(3):
                pushes.append(json.loads(await recv(ws, timeout=5)))
            # Pushes keep coming, each stamped later than the one before (their once-a-second
            # pace is the server's clock, not something a test can time reliably).
            times = [p["time"] for p in pushes]
            assert times == sorted(times) and len(set(times)) == len(times), times

    run(main())
    page = httpx.get(server.url + "/", timeout=10).text
    assert "const ROOT = \"\";" in page and "innerHTML" not in page


def test_dashboard_push_mode_follows_the_store_changes_of_every_process(serve, tmp_path):
    # The poll interval is set far beyond the test: every snapshot after the first comes from a
    # watch event, not from a timer.
    url = f"local://{tmp_path}"
    server = serve(f"{PKG}.dashboard:application",
                   env={"HORNBEAM_URL": url, "HORNBEAM_DASHBOARD_INTERVAL": "3600"})

    async def next_push(ws: Any, predicate: Callable[[Any], bool]) -> Any:
        for _ in range(50):
            push = json.loads(await recv(ws, timeout=10))
            if predicate(push):
                return push
        raise AssertionError("no snapshot matched")

    async def main() -> None:
        async with websockets.connect(f"{server.ws_url}/ws?mode=push") as ws:
            first = json.loads(await recv(ws))
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
                for _ in range(3):
                    assert (await http.get("/work")).status_code == 200
            after_work = await next_push(ws, lambda p: p["requests"] >= first["requests"] + 3)
            # Another process writes the store: the dashboard hears of it through the watch.
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c",
                "import hornbeam_erlang as hb; assert hb.backend().startswith('local'); "
                "hb.state_incr('metrics:errors', 5)",
                env={**os.environ, "HORNBEAM_URL": url})
            assert await asyncio.wait_for(proc.wait(), 30) == 0
            pushed = await next_push(ws, lambda p: p["errors"] >= after_work["errors"] + 5)
            assert pushed["errors"] == after_work["errors"] + 5
            assert pushed["time"] > first["time"]

    run(main())


@pytest.mark.parametrize(("payload", "query", "code"), [
    (json.dumps({"action": "close"}), "", 1000),
    (None, "?idle=0.5", 1001),
    ("not json", "", 1002),
    (json.dumps({"no": "action"}), "", 1002),
    (b"\x00\x01", "", 1003),
    ("x" * 5000, "", 1008),
    (json.dumps({"action": "launch"}), "", 1008),
    (json.dumps({"action": "crash"}), "", 1011),
])
def test_error_close_codes(serve, payload, query, code):
    server = serve(f"{PKG}.errors:application")

    async def main() -> None:
        async with websockets.connect(f"{server.ws_url}/ws{query}") as ws:
            await ws.send(json.dumps({"action": "echo", "text": "first"}))
            assert json.loads(await recv(ws)) == {"echo": "first"}
            got, _ = await close_code_after(ws, payload)
            assert got == code

    run(main())
    if code == 1011:
        assert "crash requested by the client" in server.log()


@pytest.mark.parametrize(("module", "key"), [("fastapi_app:app", "fastapi"), ("starlette_app:app", "starlette")])
def test_framework_rooms_count_users(serve, module, key):
    server = serve(f"{PKG}.{module}")
    n = 25

    async def main() -> None:
        sockets = await asyncio.gather(*(websockets.connect(f"{server.ws_url}/ws/lobby") for _ in range(n)))
        other = await websockets.connect(f"{server.ws_url}/ws/other")
        assert await get_json(f"{server.url}/rooms/lobby") == {"room": "lobby", "users": n}
        assert (await get_json(f"{server.url}/rooms/other"))["users"] == 1
        await sockets[0].send("hi")
        assert await recv(sockets[0]) == "Room lobby: hi"

        code, _ = await close_code_after(sockets[1], b"\x01")
        assert code == 1003
        for ws in sockets[2:12]:
            ws.transport.abort()
        await asyncio.gather(*(ws.close() for ws in [sockets[0], *sockets[12:], other]))
        await poll_json(f"{server.url}/rooms/lobby", lambda r: r["users"] == 0)
        assert (await get_json(f"{server.url}/rooms/other"))["users"] == 0

        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(f"{server.ws_url}/ws/a:b")
        assert refused.value.response.status_code == 403

    run(main())
    if key == "starlette":
        async def echo() -> None:
            async with websockets.connect(f"{server.ws_url}/ws") as ws:
                await ws.send("seed")
                assert await recv(ws) == "Echo: seed"
                assert (await close_code_after(ws, b"\x00"))[0] == 1003
        run(echo())


def test_pubsub_chat_reaches_quiet_clients(serve):
    server = serve(f"{PKG}.pubsub_chat:application")

    async def main() -> None:
        talker = await websockets.connect(f"{server.ws_url}/chat/lobby")
        quiet = [await websockets.connect(f"{server.ws_url}/chat/lobby") for _ in range(3)]
        elsewhere = await websockets.connect(f"{server.ws_url}/chat/other")
        for i in range(20):
            await talker.send(json.dumps({"user": "ada", "text": f"m{i}"}))
        # The quiet clients never send a frame, yet every message reaches them, in order.
        for ws in [talker, *quiet]:
            got = [json.loads(await recv(ws)) for _ in range(20)]
            assert got == [{"type": "message", "user": "ada", "text": f"m{i}"} for i in range(20)]
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(elsewhere.recv(), 0.3)
        assert (await close_code_after(quiet[0], "{nope"))[0] == 1003
        await talker.send(json.dumps({"user": "ada", "text": "after"}))
        assert json.loads(await recv(quiet[1]))["text"] == "after"
        for ws in [talker, *quiet[1:], elsewhere]:
            await ws.close()

    run(main())


def test_all_sections_under_one_app(serve):
    server = serve(f"{PKG}.app:app")

    async def main() -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            index = (await http.get("/")).text
            for prefix in ("echo", "pubsub", "binary", "subprotocols", "tracking", "dashboard", "errors",
                           "fastapi", "starlette"):
                assert f'href="/{prefix}/"' in index
                page = await http.get(f"/{prefix}/")
                assert page.status_code == 200
                assert f'const ROOT = "/{prefix}";' in page.text, prefix
            assert (await http.get("/tracking/connections")).json()["active"] == 0
        async with websockets.connect(f"{server.ws_url}/echo/ws") as ws:
            await ws.send("mounted")
            assert await recv(ws) == "Echo: mounted"
        async with websockets.connect(f"{server.ws_url}/fastapi/ws/r1") as ws:
            await ws.send("x")
            assert await recv(ws) == "Room r1: x"
        async with websockets.connect(f"{server.ws_url}/tracking/ws") as ws:
            await ws.send("x")
            assert json.loads(await recv(ws))["active"] == 1
        async with websockets.connect(f"{server.ws_url}/dashboard/ws") as ws:
            metrics = json.loads(await recv(ws))
            # The pages fetched above went through the metrics middleware.
            assert metrics["requests"] >= 10

    run(main())
