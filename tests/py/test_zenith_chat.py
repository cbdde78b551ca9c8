"""Zenith chat (seed 003) against a real uvicorn: the wire protocol, the REST endpoints, the errors.

Each test starts the app with the `serve` fixture and talks to it with `websockets` and `httpx`.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any, Awaitable, TypeVar
from urllib.parse import quote

import httpx
from websockets.asyncio.client import ClientConnection, connect

APP = "examples.zenith_chat.app:app"
T = TypeVar("T")


def mounted_app() -> Any:
    """A factory for uvicorn --factory: the app mounted under /chat, as `make run` mounts it."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from examples.zenith_chat.app import app

    return Starlette(routes=[Mount("/chat", app=app)])


def run(coro: Awaitable[T], timeout: float = 60) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coro
    return asyncio.run(bounded())


async def recv_json(ws: ClientConnection, timeout: float = 5) -> Any:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def assert_silent(ws: ClientConnection, wait: float = 0.3) -> None:
    try:
        frame = await asyncio.wait_for(ws.recv(), wait)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected frame: {frame}")


async def send(ws: ClientConnection, frame: Any) -> None:
    await ws.send(json.dumps(frame))


async def join(ws: ClientConnection, username: str, room: str = "general") -> list[str]:
    """Joins and checks the seed's two answers; returns the users list."""
    await send(ws, {"type": "join", "username": username, "room": room})
    assert await recv_json(ws) == {
        "type": "user_joined", "username": username, "message": f"{username} joined the room"}
    users = await recv_json(ws)
    assert users["type"] == "users_list"
    return users["users"]


async def wait_rooms(base: str, expected: list[dict[str, Any]]) -> None:
    """Polls GET /api/rooms until it equals `expected` (cleanup runs after the socket closes)."""
    body: Any = None
    async with httpx.AsyncClient(base_url=base) as http:
        for _ in range(50):
            body = (await http.get("/api/rooms")).json()
            if body == {"rooms": expected}:
                return
            await asyncio.sleep(0.05)
    raise AssertionError(f"/api/rooms stayed {body}, expected {expected}")


def test_join_message_typing_and_leave(serve):
    server = serve(APP)

    async def scenario() -> None:
        url = f"{server.ws_url}/ws/chat/general"
        async with connect(url) as alice:
            assert await join(alice, "alice") == ["alice"]
            async with connect(url) as bob:
                assert await join(bob, "bob") == ["alice", "bob"]
                assert await recv_json(alice) == {
                    "type": "user_joined", "username": "bob", "message": "bob joined the room"}

                await send(alice, {"type": "message", "message": "hello bob"})
                for ws in (alice, bob):
                    event = await recv_json(ws)
                    assert list(event) == ["type", "username", "message", "timestamp"]
                    assert event["type"] == "message"
                    assert event["username"] == "alice"
                    assert event["message"] == "hello bob"
                    assert isinstance(event["timestamp"], float)

                await send(bob, {"type": "typing", "is_typing": True})
                for ws in (alice, bob):
                    assert await recv_json(ws) == {"type": "typing", "username": "bob", "is_typing": True}
                await send(bob, {"type": "typing"})
                for ws in (alice, bob):
                    assert await recv_json(ws) == {"type": "typing", "username": "bob", "is_typing": False}

            assert await recv_json(alice) == {
                "type": "user_left", "username": "bob", "message": "bob left the room"}
            await assert_silent(alice)

    run(scenario())


def test_rooms_are_isolated_and_names_are_not_patterns(serve):
    server = serve(APP)

    async def scenario() -> None:
        rooms = ["a", "a:b", "*", "x y%2F"]
        sockets = []
        try:
            for i, room in enumerate(rooms):
                ws = await connect(f"{server.ws_url}/ws/chat/{quote(room, safe='')}")
                sockets.append(ws)
                assert await join(ws, f"user{i}", room) == [f"user{i}"]
            await send(sockets[0], {"type": "message", "message": "only for room a"})
            assert (await recv_json(sockets[0]))["message"] == "only for room a"
            for ws in sockets[1:]:
                await assert_silent(ws, 0.2)
            await wait_rooms(server.url, sorted(
                ({"room_id": r, "user_count": 1, "users": [f"user{i}"]} for i, r in enumerate(rooms)),
                key=lambda r: r["room_id"]))
        finally:
            for ws in sockets:
                await ws.close()
        await wait_rooms(server.url, [])

    run(scenario())


def test_rest_rooms_and_real_404(serve):
    server = serve(APP)

    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=server.url) as http:
            assert (await http.get("/api/rooms")).json() == {"rooms": []}
            missing = await http.get("/api/rooms/general")
            assert missing.status_code == 404
            assert missing.headers["content-type"] == "application/json"
            assert missing.json() == {"error": "Room not found"}

            async with connect(f"{server.ws_url}/ws/chat/general") as a, \
                    connect(f"{server.ws_url}/ws/chat/general") as b, \
                    connect(f"{server.ws_url}/ws/chat/other") as c:
                await join(a, "ann")
                await join(b, "ann")  # the seed lists one name per connection
                await join(c, "cid")
                info = await http.get("/api/rooms/general")
                assert info.status_code == 200
                assert info.json() == {"room_id": "general", "user_count": 2, "users": ["ann", "ann"]}
                assert (await http.get("/api/rooms")).json() == {"rooms": [
                    {"room_id": "general", "user_count": 2, "users": ["ann", "ann"]},
                    {"room_id": "other", "user_count": 1, "users": ["cid"]},
                ]}
            await wait_rooms(server.url, [])
            assert (await http.get("/api/rooms/general")).status_code == 404

    run(scenario())


def test_error_frames_keep_the_connection_and_reach_nobody_else(serve):
    server = serve(APP)

    async def expect_error(ws: ClientConnection, frame: Any, code: str) -> None:
        await ws.send(frame if isinstance(frame, str) else json.dumps(frame))
        event = await recv_json(ws)
        assert event["type"] == "error" and event["error"] == code, event
        assert isinstance(event["message"], str) and event["message"]

    async def scenario() -> None:
        url = f"{server.ws_url}/ws/chat/general"
        async with connect(url) as watcher, connect(url) as ws:
            await join(watcher, "watcher")
            # Before join: a message or typing is refused, and nothing was broadcast.
            await expect_error(ws, {"type": "message", "message": "hi"}, "not_joined")
            await expect_error(ws, {"type": "typing", "is_typing": True}, "not_joined")
            await expect_error(ws, "{not json", "invalid_json")
            await expect_error(ws, "[1, 2]", "invalid_json")
            await expect_error(ws, {"type": "shout"}, "unknown_type")
            await expect_error(ws, {"message": "no type"}, "unknown_type")
            await expect_error(ws, {"type": "join"}, "invalid_username")
            await expect_error(ws, {"type": "join", "username": "   "}, "invalid_username")
            await expect_error(ws, {"type": "join", "username": 42}, "invalid_username")
            await expect_error(ws, {"type": "join", "username": "u" * 65}, "invalid_username")
            await assert_silent(watcher)
            async with httpx.AsyncClient(base_url=server.url) as http:
                assert (await http.get("/api/rooms/general")).json()["users"] == ["watcher"]

            await join(ws, "late")
            assert (await recv_json(watcher))["type"] == "user_joined"
            await expect_error(ws, {"type": "message", "message": ""}, "empty_message")
            await expect_error(ws, {"type": "message", "message": "  \n "}, "empty_message")
            await expect_error(ws, {"type": "message"}, "empty_message")
            await expect_error(ws, {"type": "message", "message": ["x"]}, "empty_message")
            await expect_error(ws, {"type": "message", "message": "x" * 2001}, "message_too_long")
            await assert_silent(watcher)
            # Still connected and joined after all that; a username in the frame is not trusted.
            await send(ws, {"type": "message", "message": "still here", "username": "spoof", "room": "x"})
            event = await recv_json(watcher)
            assert (event["username"], event["message"]) == ("late", "still here")
            assert (await recv_json(ws))["message"] == "still here"

    run(scenario())


def test_second_join_renames_the_connection(serve):
    server = serve(APP)

    async def scenario() -> None:
        async with connect(f"{server.ws_url}/ws/chat/general") as ws:
            await join(ws, "first")
            assert await join(ws, "second") == ["second"]
            await send(ws, {"type": "message", "message": "hi"})
            assert (await recv_json(ws))["username"] == "second"
        await wait_rooms(server.url, [])

    run(scenario())


def test_abrupt_disconnect_cleans_up_and_announces(serve):
    server = serve(APP)

    async def scenario() -> None:
        url = f"{server.ws_url}/ws/chat/general"
        async with connect(url) as alice:
            await join(alice, "alice")
            bob = await connect(url)
            await join(bob, "bob")
            await recv_json(alice)
            bob.transport.abort()  # no close frame: the TCP connection just drops
            assert await recv_json(alice) == {
                "type": "user_left", "username": "bob", "message": "bob left the room"}
            await wait_rooms(server.url, [{"room_id": "general", "user_count": 1, "users": ["alice"]}])

    run(scenario())


def test_connection_that_never_joins_leaves_nothing(serve):
    server = serve(APP)

    async def scenario() -> None:
        async with connect(f"{server.ws_url}/ws/chat/general") as ws:
            await send(ws, {"type": "typing"})
            await recv_json(ws)
        await wait_rooms(server.url, [])

    run(scenario())


def test_page_is_served_with_its_root_path(serve):
    server = serve(APP)
    page = httpx.get(server.url + "/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<meta name="root-path" content="">' in page.text
    assert not re.search(r"innerHTML\s*=|outerHTML|insertAdjacentHTML|document\.write", page.text)
    assert "ROOT + '/ws/chat/'" in page.text


def test_mounted_under_a_prefix(serve):
    server = serve("tests.py.test_zenith_chat:mounted_app", args=("--factory",))

    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=server.url) as http:
            page = await http.get("/chat/")
            assert '<meta name="root-path" content="/chat">' in page.text
            async with connect(f"{server.ws_url}/chat/ws/chat/lobby") as ws:
                assert await join(ws, "mounted") == ["mounted"]
                rooms = (await http.get("/chat/api/rooms")).json()
                assert rooms == {"rooms": [{"room_id": "lobby", "user_count": 1, "users": ["mounted"]}]}
                assert (await http.get("/chat/api/rooms/nope")).status_code == 404

    run(scenario())

