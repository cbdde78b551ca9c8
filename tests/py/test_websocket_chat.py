"""The WebSocket chat (examples/websocket_chat) on a real uvicorn with real `websockets` clients."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any, Awaitable, Callable, TypeVar

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from conftest import free_port, require, wait_for_port

APP = "examples.websocket_chat.app:application"
T = TypeVar("T")


def run(coro: Awaitable[T], timeout: float = 60) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))  # type: ignore[arg-type]


class Client:
    """A chat user: a socket plus the frames received so far, sorted by type."""

    def __init__(self, ws: Any, name: str):
        self.ws = ws
        self.name = name
        self.user_id: str | None = None
        self.joined: dict[str, Any] | None = None
        self.frames: list[dict[str, Any]] = []
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    @classmethod
    async def connect(cls, base: str, room: str, name: str, join: bool = True) -> "Client":
        ws = await websockets.connect(f"{base}/ws/{room}", open_timeout=10, max_size=None)
        client = cls(ws, name)
        if join:
            await client.join()
        client._reader = asyncio.create_task(client._read())
        return client

    async def join(self) -> None:
        await self.ws.send(json.dumps({"type": "join", "username": self.name}))
        while True:
            frame = json.loads(await asyncio.wait_for(self.ws.recv(), 10))
            if frame["type"] == "joined":
                self.joined = frame
                self.user_id = frame["user_id"]
                return
            self.frames.append(frame)

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                self.frames.append(json.loads(raw))
                self._changed.set()
        except ConnectionClosed:
            pass
        self._changed.set()

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f.get("type") == kind]

    def texts(self) -> list[str]:
        return [f["data"]["text"] for f in self.of_type("message")]

    async def wait_for(self, predicate: Callable[["Client"], bool], timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{self.name}: condition not met; frames: {self.frames[-10:]}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    async def send(self, **frame: Any) -> None:
        await self.ws.send(json.dumps(frame))

    async def close(self) -> None:
        await self.ws.close()
        if self._reader is not None:
            await asyncio.wait([self._reader], timeout=5)


async def room_info(base_http: str, room: str, limit: int = 50) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(f"{base_http}/api/rooms/{room}", params={"limit": limit})
        response.raise_for_status()
        return response.json()


async def wait_room(base_http: str, room: str, predicate: Callable[[dict[str, Any]], bool],
                    timeout: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        info = await room_info(base_http, room)
        if predicate(info):
            return info
        if time.monotonic() > deadline:
            raise AssertionError(f"room {room} never reached the expected state: {info}")
        await asyncio.sleep(0.1)


def test_two_rooms_three_users_each(serve):
    server = serve(APP)

    async def main() -> None:
        rooms = {"red": ["ann", "bob", "cyd"], "blue": ["dan", "eve", "fay"]}
        clients = {room: [await Client.connect(server.ws_url, room, n) for n in names]
                   for room, names in rooms.items()}
        for room, members in clients.items():
            for c in members:
                await c.send(type="message", text=f"{room}:{c.name}:hello")
        for room, members in clients.items():
            expected = sorted(f"{room}:{n}:hello" for n in rooms[room])
            for c in members:
                await c.wait_for(lambda c: len(c.texts()) >= 3)
        # Let any stray cross-room delivery arrive before checking there was none.
        await asyncio.sleep(0.3)
        for room, members in clients.items():
            expected = sorted(f"{room}:{n}:hello" for n in rooms[room])
            for c in members:
                assert sorted(c.texts()) == expected, (c.name, c.texts())
                # Every message carries its sender's name and a per-room id.
                for frame in c.of_type("message"):
                    assert frame["data"]["username"] == frame["data"]["text"].split(":")[1]
                ids = sorted(f["data"]["id"] for f in c.of_type("message"))
                assert ids == [1, 2, 3]
        # The last joiner of each room saw everyone in its user list.
        for room, members in clients.items():
            assert sorted(u["username"] for u in members[-1].joined["users"]) == sorted(rooms[room])
            # The first joiner heard the later ones join.
            joined_names = [f["data"]["username"] for f in members[0].of_type("user_joined")]
            assert set(rooms[room][1:]) <= set(joined_names)
        async with httpx.AsyncClient(timeout=10) as http:
            listed = {r["id"]: r for r in (await http.get(f"{server.url}/api/rooms")).json()}
        assert listed["red"]["users"] == 3 and listed["blue"]["users"] == 3
        assert listed["red"]["messages"] == 3
        for members in clients.values():
            for c in members:
                await c.close()

    run(main())


def test_history_on_join_keeps_last_100(serve):
    server = serve(APP)

    async def main() -> None:
        writer = await Client.connect(server.ws_url, "history", "writer")
        for i in range(1, 131):
            await writer.send(type="message", text=f"m{i}")
        await writer.wait_for(lambda c: len(c.texts()) == 130, timeout=20)

        late = await Client.connect(server.ws_url, "history", "late")
        recent = late.joined["recent_messages"]
        assert [m["text"] for m in recent] == [f"m{i}" for i in range(81, 131)]
        assert [m["id"] for m in recent] == list(range(81, 131))

        info = await room_info(server.url, "history", limit=1000)
        # Older messages are deleted from the store, not only hidden.
        assert info["messages"] == 100
        assert [m["id"] for m in info["recent_messages"]] == list(range(31, 131))
        await writer.close()
        await late.close()

    run(main())


def test_typing_reaches_the_room_only(serve):
    server = serve(APP)

    async def main() -> None:
        ann = await Client.connect(server.ws_url, "typing", "ann")
        bob = await Client.connect(server.ws_url, "typing", "bob")
        other = await Client.connect(server.ws_url, "elsewhere", "zed")
        await ann.send(type="typing", is_typing=True)
        await bob.wait_for(lambda c: len(c.of_type("typing")) == 1)
        typing = bob.of_type("typing")[0]["data"]
        assert typing == {"user_id": ann.user_id, "username": "ann", "is_typing": True}
        await ann.send(type="typing", is_typing=False)
        await bob.wait_for(lambda c: len(c.of_type("typing")) == 2)
        assert bob.of_type("typing")[1]["data"]["is_typing"] is False
        await asyncio.sleep(0.2)
        assert other.of_type("typing") == []
        for c in (ann, bob, other):
            await c.close()

    run(main())


def test_leave_updates_users_and_store(serve):
    server = serve(APP)

    async def main() -> None:
        ann = await Client.connect(server.ws_url, "leave", "ann")
        bob = await Client.connect(server.ws_url, "leave", "bob")
        info = await room_info(server.url, "leave")
        assert info["users"] == 2
        assert sorted(u["username"] for u in info["user_list"]) == ["ann", "bob"]

        bob_id = bob.user_id
        await bob.close()
        await ann.wait_for(lambda c: any(f["data"]["user_id"] == bob_id for f in c.of_type("user_left")))
        left = [f for f in ann.of_type("user_left") if f["data"]["user_id"] == bob_id][0]
        assert left["data"]["username"] == "bob"
        info = await room_info(server.url, "leave")
        assert info["users"] == 1
        assert [u["username"] for u in info["user_list"]] == ["ann"]
        await ann.close()
        await wait_room(server.url, "leave", lambda i: i["users"] == 0 and i["user_list"] == [])

    run(main())


def test_200_clients_come_and_go_leave_nothing(serve):
    server = serve(APP)
    n = 200

    async def one(i: int, go: asyncio.Event) -> str:
        ws = await websockets.connect(f"{server.ws_url}/ws/crowd", open_timeout=20)
        await ws.send(json.dumps({"type": "join", "username": f"u{i}"}))
        while json.loads(await asyncio.wait_for(ws.recv(), 20))["type"] != "joined":
            pass
        if i % 10 == 0:
            await ws.send(json.dumps({"type": "message", "text": f"hi from {i}"}))
        await asyncio.wait_for(go.wait(), 30)
        way = ("close", "abort", "garbage", "typing-then-abort")[i % 4]
        if way == "close":
            await ws.close()
        elif way == "abort":
            # The network vanishes: no close frame, the TCP connection is reset.
            ws.transport.abort()
        elif way == "garbage":
            await ws.send("{not json")
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            except ConnectionClosed:
                pass
            assert ws.close_code == 1007
        else:
            await ws.send(json.dumps({"type": "typing"}))
            ws.transport.abort()
        return way

    async def main() -> None:
        go = asyncio.Event()
        tasks = [asyncio.create_task(one(i, go)) for i in range(n)]
        info = await wait_room(server.url, "crowd", lambda i: i["users"] == n, timeout=40)
        assert len(info["user_list"]) == n
        go.set()
        ways = await asyncio.gather(*tasks)
        assert len(ways) == n
        info = await wait_room(server.url, "crowd", lambda i: i["users"] == 0 and i["user_list"] == [],
                               timeout=20)
        assert info["messages"] == n // 10

    run(main(), timeout=100)


def test_bad_frames_close_the_sender_only(serve):
    server = serve(APP)

    async def bad(kind: str, payload: Any, expected_code: int, ann: Client, bob: Client) -> None:
        mallory = await Client.connect(server.ws_url, "bad", f"mallory-{kind}")
        await ann.wait_for(lambda c: any(f["data"]["user_id"] == mallory.user_id for f in c.of_type("user_joined")))
        await mallory.ws.send(payload)
        await asyncio.wait_for(mallory._reader, 20)
        assert mallory.ws.close_code == expected_code, (kind, mallory.ws.close_code, mallory.ws.close_reason)
        # The sender is removed from the room, and the others keep chatting.
        await ann.wait_for(lambda c: any(f["data"]["user_id"] == mallory.user_id for f in c.of_type("user_left")))
        await ann.send(type="message", text=f"still here after {kind}")
        await bob.wait_for(lambda c: f"still here after {kind}" in c.texts())

    async def main() -> None:
        ann = await Client.connect(server.ws_url, "bad", "ann")
        bob = await Client.connect(server.ws_url, "bad", "bob")
        await bad("invalid-json", '{"type": "message", "text": ', 1007, ann, bob)
        await bad("not-an-object", "[1, 2, 3]", 1007, ann, bob)
        await bad("binary", bytes(range(256)) * 4, 1003, ann, bob)
        await bad("10mb", json.dumps({"type": "message", "text": "x" * (10 * 1024 * 1024)}), 1009, ann, bob)
        info = await room_info(server.url, "bad")
        assert info["users"] == 2
        assert sorted(u["username"] for u in info["user_list"]) == ["ann", "bob"]
        assert all("x" * 100 not in t for t in bob.texts())
        await ann.close()
        await bob.close()

    run(main(), timeout=90)


def test_errors_without_closing(serve):
    server = serve(APP)

    async def main() -> None:
        ann = await Client.connect(server.ws_url, "limits", "ann", join=False)
        await ann.send(type="message", text="before join")
        await ann.wait_for(lambda c: len(c.of_type("error")) == 1)
        assert ann.of_type("error")[0]["reason"] == "join first"
        await ann.send(type="join", username="ann")
        await ann.wait_for(lambda c: len(c.of_type("joined")) == 1)
        await ann.send(type="message", text="y" * 2001)
        await ann.send(type="nonsense")
        await ann.send(type="join", username="again")
        await ann.wait_for(lambda c: len(c.of_type("error")) == 4)
        reasons = [f["reason"] for f in ann.of_type("error")]
        assert "message over 2000 characters" in reasons[1]
        assert reasons[2:] == ["unknown message type", "already joined"]
        await ann.send(type="message", text="  fine  ")
        await ann.wait_for(lambda c: c.texts() == ["fine"])
        assert ann.ws.close_code is None
        await ann.close()

    run(main())


def test_usernames_are_cleaned_not_escaped(serve):
    server = serve(APP)

    async def main() -> None:
        hostile = "<img src=x onerror=alert(1)>"
        a = await Client.connect(server.ws_url, "names", hostile)
        # Markup is kept as text (the page renders it with textContent); control characters go.
        assert a.joined["username"] == hostile
        b = await Client.connect(server.ws_url, "names", "\x00\x1b[31m" + "n" * 100)
        assert b.joined["username"] == "[31m" + "n" * 28
        c = await Client.connect(server.ws_url, "names", "   ")
        assert c.joined["username"] == f"user_{c.user_id[:8]}"
        for x in (a, b, c):
            await x.close()

    run(main())


@pytest.mark.parametrize("path", ["/ws/a:b", "/ws/*", "/ws/room/extra", "/elsewhere", "/ws/" + "r" * 65])
def test_bad_room_paths_are_refused(serve, path):
    server = serve(APP)

    async def main() -> None:
        with pytest.raises(InvalidStatus) as info:
            await websockets.connect(f"{server.ws_url}{path}", open_timeout=10)
        assert info.value.response.status_code == 403

    run(main())


def test_http_routes(serve):
    server = serve(APP)
    with httpx.Client(base_url=server.url, timeout=10) as http:
        page = http.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "const ROOT = \"\";" in page.text
        # The page never turns received text into markup.
        assert "innerHTML" not in page.text and "insertAdjacentHTML" not in page.text
        assert http.get("/api/rooms").json() == []
        assert http.get("/api/rooms/nowhere").status_code == 404
        assert http.get("/nope").status_code == 404
        assert http.post("/api/rooms").status_code == 405


REDIS_SERVER = "/usr/bin/redis-server"


@pytest.fixture
def redis_url():
    """A private redis-server on a free port, stopped by its PID; the engine must open it."""
    require(REDIS_SERVER)
    port = free_port()
    proc = subprocess.Popen([REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc)
        url = f"redis://127.0.0.1:{port}/0"
        probe = subprocess.run([sys.executable, "-c", "import hornbeam_erlang as h; h.state_get('probe'); print(h.backend())"],
                               env={**os.environ, "HORNBEAM_URL": url}, capture_output=True, text=True,
                               timeout=30)
        assert probe.returncode == 0, f"the engine does not open HORNBEAM_URL={url}: {probe.stderr}"
        assert probe.stdout.strip() == "redis", probe.stdout
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_two_workers_share_the_room_through_redis(serve, redis_url):
    server = serve(APP, env={"HORNBEAM_URL": redis_url}, args=("--workers", "2"))
    n = 40

    async def main() -> None:
        clients = [await Client.connect(server.ws_url, "shared", f"w{i}") for i in range(n)]
        # Each request lands on either worker; both must see every user.
        for _ in range(10):
            info = await room_info(server.url, "shared")
            assert info["users"] == n and len(info["user_list"]) == n
        for c in clients[:5]:
            await c.send(type="message", text=f"from {c.name}")
        for c in clients:
            await c.wait_for(lambda c: len(c.texts()) == 5)
        for c in clients:
            await c.close()
        await wait_room(server.url, "shared", lambda i: i["users"] == 0 and i["user_list"] == [])

    run(main(), timeout=90)
